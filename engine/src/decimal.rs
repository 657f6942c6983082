//! Decimal128 arithmetic on 64-bit multiplications where the values allow it.
//!
//! Arrow multiplies Decimal128 values with an overflow-checked 128-bit multiplication, and
//! rescales the operands of an addition or subtraction of two scales (`1 - l_discount`) the
//! same way. wasm32 has no 128-bit multiplication, so each value costs a call into a runtime
//! helper: with the loops around it, a third of a chamber's time in TPC-H Q1. Decimal values
//! nearly always fit in 64 bits, and then no product or rescaled sum can overflow 128 bits:
//! one widening 64-bit multiplication per operand gives the exact value, inline.
//!
//! [`DecimalArithmetic`] is a logical optimizer rule that hands `*`, and `+` and `-` of two
//! scales, over two Decimal128 operands to a [`DecimalOp`] function. The function checks
//! each batch: when every operand fits in 64 bits it takes that path, and otherwise it calls
//! the kernel DataFusion would have called, so answers, types and errors stay arrow's.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Datum, Decimal128Array, new_empty_array, new_null_array,
};
use arrow::compute::kernels::numeric;
use arrow::datatypes::{DataType, Decimal128Type, Field, FieldRef};
use arrow::error::ArrowError;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue, internal_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_expr_common::datum::apply;

/// The operators [`DecimalOp`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecimalOperator {
    /// `*`
    Multiply,
    /// `+`
    Plus,
    /// `-`
    Minus,
}

impl DecimalOperator {
    fn of(operator: Operator) -> Option<Self> {
        match operator {
            Operator::Multiply => Some(Self::Multiply),
            Operator::Plus => Some(Self::Plus),
            Operator::Minus => Some(Self::Minus),
            _ => None,
        }
    }

    /// The arrow kernel DataFusion's `BinaryExpr` calls for this operator.
    fn kernel(self) -> fn(&dyn Datum, &dyn Datum) -> KernelResult {
        match self {
            Self::Multiply => numeric::mul_wrapping,
            Self::Plus => numeric::add_wrapping,
            Self::Minus => numeric::sub_wrapping,
        }
    }
}

type KernelResult = Result<ArrayRef, ArrowError>;

/// `left <operator> right` over two Decimal128 values, as a scalar function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DecimalOp {
    operator: DecimalOperator,
    signature: Signature,
}

impl DecimalOp {
    /// The function for `operator`.
    pub fn new(operator: DecimalOperator) -> Self {
        Self {
            operator,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }

    /// The type arrow gives `left <operator> right`, or `None` when that is not a
    /// Decimal128 of two Decimal128 operands, or arrow refuses the operation.
    fn result_type(&self, left: &DataType, right: &DataType) -> Option<DataType> {
        if !matches!(
            (left, right),
            (DataType::Decimal128(..), DataType::Decimal128(..))
        ) {
            return None;
        }
        let result = (self.operator.kernel())(&new_empty_array(left), &new_empty_array(right));
        result
            .ok()
            .map(|array| array.data_type().clone())
            .filter(|t| matches!(t, DataType::Decimal128(..)))
    }

    /// What each operand is multiplied by before an addition or subtraction (1 and 1 for a
    /// multiplication), when both fit in 64 bits; `None` sends the batch to arrow.
    fn multipliers(&self, left: i8, right: i8, result: i8) -> Option<(i64, i64)> {
        match self.operator {
            DecimalOperator::Multiply => Some((1, 1)),
            DecimalOperator::Plus | DecimalOperator::Minus => {
                let power = |scale: i8| {
                    let exponent = u32::try_from(result.checked_sub(scale)?).ok()?;
                    10i64.checked_pow(exponent)
                };
                Some((power(left)?, power(right)?))
            }
        }
    }

    /// The answer on 64-bit multiplications, or `None` when an operand does not fit in 64
    /// bits (or the batch has a shape this path does not take).
    fn narrow(
        &self,
        left: &ColumnarValue,
        right: &ColumnarValue,
        result: &DataType,
    ) -> DfResult<Option<ArrayRef>> {
        let (
            DataType::Decimal128(precision, scale),
            DataType::Decimal128(_, left_scale),
            DataType::Decimal128(_, right_scale),
        ) = (result, &left.data_type(), &right.data_type())
        else {
            return Ok(None);
        };
        let Some((l_mul, r_mul)) = self.multipliers(*left_scale, *right_scale, *scale) else {
            return Ok(None);
        };
        let (l_mul, r_mul) = (i128::from(l_mul), i128::from(r_mul));
        // Every operand below 2^63 in magnitude, and every multiplier too: each product is
        // below 2^126 and a sum or difference of two below 2^127, so nothing overflows.
        let answer: Decimal128Array = match (self.operator, left, right) {
            (_, ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)) => return Ok(None),
            (_, ColumnarValue::Scalar(s), _) | (_, _, ColumnarValue::Scalar(s)) if s.is_null() => {
                let rows = match (left, right) {
                    (ColumnarValue::Array(a), _) | (_, ColumnarValue::Array(a)) => a.len(),
                    _ => 0,
                };
                return Ok(Some(new_null_array(result, rows)));
            }
            (op, ColumnarValue::Array(l), ColumnarValue::Array(r)) => {
                let l = l.as_primitive::<Decimal128Type>();
                let r = r.as_primitive::<Decimal128Type>();
                if !fits(l) || !fits(r) {
                    return Ok(None);
                }
                match op {
                    DecimalOperator::Multiply => {
                        arrow::compute::binary(l, r, |a, b| wide(a) * wide(b))?
                    }
                    DecimalOperator::Plus => {
                        arrow::compute::binary(l, r, |a, b| wide(a) * l_mul + wide(b) * r_mul)?
                    }
                    DecimalOperator::Minus => {
                        arrow::compute::binary(l, r, |a, b| wide(a) * l_mul - wide(b) * r_mul)?
                    }
                }
            }
            (op, ColumnarValue::Array(array), ColumnarValue::Scalar(scalar))
            | (op, ColumnarValue::Scalar(scalar), ColumnarValue::Array(array)) => {
                let ScalarValue::Decimal128(Some(value), ..) = scalar else {
                    return Ok(None);
                };
                let array = array.as_primitive::<Decimal128Type>();
                let Some(value) = narrow_value(*value) else {
                    return Ok(None);
                };
                if !fits(array) {
                    return Ok(None);
                }
                // The scalar's side, rescaled once, and the array's multiplier.
                let scalar_left = matches!(left, ColumnarValue::Scalar(_));
                let (term, mul) = if scalar_left {
                    (i128::from(value) * l_mul, r_mul)
                } else {
                    (i128::from(value) * r_mul, l_mul)
                };
                match (op, scalar_left) {
                    (DecimalOperator::Multiply, _) => array.unary(|v| wide(v) * term),
                    (DecimalOperator::Plus, _) => array.unary(|v| wide(v) * mul + term),
                    (DecimalOperator::Minus, false) => array.unary(|v| wide(v) * mul - term),
                    (DecimalOperator::Minus, true) => array.unary(|v| term - wide(v) * mul),
                }
            }
        };
        Ok(Some(Arc::new(
            answer.with_precision_and_scale(*precision, *scale)?,
        )))
    }
}

/// `value` as a 64-bit integer, when it fits.
fn narrow_value(value: i128) -> Option<i64> {
    i64::try_from(value).ok()
}

/// A value known to fit in 64 bits, widened again: the compiler multiplies two of these with
/// one widening 64-bit multiplication.
#[inline]
fn wide(value: i128) -> i128 {
    i128::from(value as i64)
}

/// Whether every slot of `array` (null slots too) fits in 64 bits.
fn fits(array: &Decimal128Array) -> bool {
    array
        .values()
        .iter()
        .fold(true, |all, v| all & (i128::from(*v as i64) == *v))
}

impl ScalarUDFImpl for DecimalOp {
    fn name(&self) -> &str {
        match self.operator {
            DecimalOperator::Multiply => "apiary_decimal_multiply",
            DecimalOperator::Plus => "apiary_decimal_plus",
            DecimalOperator::Minus => "apiary_decimal_minus",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        // Null when either operand is, as for the operator it stands for.
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name(),
            self.return_type(&types)?,
            nullable,
        )))
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        match arg_types {
            [left, right] => match self.result_type(left, right) {
                Some(t) => Ok(t),
                None => internal_err!("{} of {left} and {right}", self.name()),
            },
            _ => internal_err!("{} takes two arguments", self.name()),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [left, right] = args.args.as_slice() else {
            return internal_err!("{} takes two arguments", self.name());
        };
        if let Some(answer) = self.narrow(left, right, args.return_type())? {
            return Ok(ColumnarValue::Array(answer));
        }
        apply(left, right, self.operator.kernel())
    }
}

/// The logical optimizer rule that hands Decimal128 arithmetic to [`DecimalOp`]; see the
/// module documentation. It runs after DataFusion's own rules, so the expressions it sees are
/// typed and their common parts already shared.
#[derive(Debug, Default)]
pub struct DecimalArithmetic;

impl DecimalArithmetic {
    /// `expr` with its Decimal128 arithmetic handed to [`DecimalOp`]s, given the schema its
    /// columns come from. Expressions whose types cannot be resolved stay as they are.
    fn rewrite_expr(expr: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
        expr.transform_up(|expr| {
            let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr else {
                return Ok(Transformed::no(expr));
            };
            let Some(operator) = DecimalOperator::of(*op) else {
                return Ok(Transformed::no(expr));
            };
            let (Ok(left_type), Ok(right_type), Ok(own_type)) = (
                left.get_type(schema),
                right.get_type(schema),
                expr.get_type(schema),
            ) else {
                return Ok(Transformed::no(expr));
            };
            // Equal scales add and subtract without rescaling: arrow's kernel is inline.
            if let (DataType::Decimal128(_, l), DataType::Decimal128(_, r)) =
                (&left_type, &right_type)
                && operator != DecimalOperator::Multiply
                && l == r
            {
                return Ok(Transformed::no(expr));
            }
            let function = DecimalOp::new(operator);
            if function.result_type(&left_type, &right_type).as_ref() != Some(&own_type) {
                return Ok(Transformed::no(expr));
            }
            let Expr::BinaryExpr(BinaryExpr { left, right, .. }) = expr else {
                unreachable!("matched above");
            };
            Ok(Transformed::yes(Expr::ScalarFunction(
                ScalarFunction::new_udf(
                    Arc::new(ScalarUDF::new_from_impl(function)),
                    vec![*left, *right],
                ),
            )))
        })
    }
}

impl OptimizerRule for DecimalArithmetic {
    fn name(&self) -> &str {
        "apiary_decimal_arithmetic"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        // Expressions pushed into a scan are left to the scan; everything else reads its
        // inputs' columns.
        if plan.inputs().is_empty() {
            return Ok(Transformed::no(plan));
        }
        let schema = merge_schema(&plan.inputs());
        // Keep every expression's name, so the plan's schema does not change.
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = Self::rewrite_expr(expr, &schema)?;
            Ok(rewritten.update_data(|expr| name.restore(expr)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::record_batch::RecordBatch;
    use datafusion::config::ConfigOptions;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    fn decimals(values: &[Option<i128>], precision: u8, scale: i8) -> ColumnarValue {
        let array = Decimal128Array::from(values.to_vec())
            .with_precision_and_scale(precision, scale)
            .expect("a valid decimal type");
        ColumnarValue::Array(Arc::new(array))
    }

    fn scalar(value: Option<i128>, precision: u8, scale: i8) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Decimal128(value, precision, scale))
    }

    fn invoke(op: &DecimalOp, left: &ColumnarValue, right: &ColumnarValue) -> DfResult<ArrayRef> {
        let rows = match (left, right) {
            (ColumnarValue::Array(a), _) | (_, ColumnarValue::Array(a)) => a.len(),
            _ => 1,
        };
        let arg_fields = [left, right]
            .iter()
            .map(|v| Arc::new(Field::new("arg", v.data_type(), true)))
            .collect::<Vec<_>>();
        let return_type = op.return_type(&[left.data_type(), right.data_type()])?;
        let args = ScalarFunctionArgs {
            args: vec![left.clone(), right.clone()],
            arg_fields,
            number_rows: rows,
            return_field: Arc::new(Field::new("out", return_type, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        op.invoke_with_args(args)?.into_array(rows)
    }

    fn arrow_answer(
        op: DecimalOperator,
        left: &ColumnarValue,
        right: &ColumnarValue,
    ) -> DfResult<ArrayRef> {
        let rows = match (left, right) {
            (ColumnarValue::Array(a), _) | (_, ColumnarValue::Array(a)) => a.len(),
            _ => 1,
        };
        apply(left, right, op.kernel())?.into_array(rows)
    }

    const OPERATORS: [DecimalOperator; 3] = [
        DecimalOperator::Multiply,
        DecimalOperator::Plus,
        DecimalOperator::Minus,
    ];

    #[test]
    fn values_that_fit_in_64_bits_get_arrows_answers_without_its_kernel() {
        let prices = [
            Some(10_495_000),
            None,
            Some(-7_25),
            Some(0),
            Some(i128::from(i64::MAX)),
            Some(i128::from(i64::MIN)),
        ];
        let discounts = [Some(5), Some(10), None, Some(-99), Some(1), Some(-1)];
        // Q1's shapes: equal scales, a literal of scale 0 against scale 2, and a product
        // (scale 4, precision 38) against a sum of scale 2.
        let shapes = [((15, 2), (15, 2)), ((20, 0), (15, 2)), ((38, 4), (23, 2))];
        for ((p1, s1), (p2, s2)) in shapes {
            let left = decimals(&prices, p1, s1);
            let right = decimals(&discounts, p2, s2);
            for operator in OPERATORS {
                let op = DecimalOp::new(operator);
                let cases = [
                    (left.clone(), right.clone()),
                    (left.clone(), scalar(Some(-3), p2, s2)),
                    (scalar(Some(100), p1, s1), right.clone()),
                    (left.clone(), scalar(None, p2, s2)),
                    (scalar(None, p1, s1), right.clone()),
                ];
                for (l, r) in cases {
                    let result_type = op
                        .return_type(&[l.data_type(), r.data_type()])
                        .expect("a decimal type");
                    let narrow = op.narrow(&l, &r, &result_type).expect("narrow path");
                    assert!(
                        narrow.is_some(),
                        "{operator:?} of {l:?} and {r:?} took arrow's path"
                    );
                    let expected = arrow_answer(operator, &l, &r).expect("arrow's answer");
                    let answer = invoke(&op, &l, &r).expect("our answer");
                    assert_eq!(answer.data_type(), expected.data_type());
                    assert_eq!(&answer, &expected, "{operator:?} of {l:?} and {r:?}");
                }
            }
        }
    }

    #[test]
    fn values_beyond_64_bits_go_to_arrows_kernel_with_its_answers_and_errors() {
        let big = 1i128 << 70;
        let left = decimals(&[Some(3), Some(big), None], 38, 2);
        let right = decimals(&[Some(7), Some(-2), Some(1)], 20, 0);
        for operator in OPERATORS {
            assert_arrows_path(operator, &left, &right);
        }
        // A product beyond 128 bits fails as arrow's kernel fails.
        let huge = decimals(&[Some(10i128.pow(20))], 38, 0);
        let op = DecimalOp::new(DecimalOperator::Multiply);
        let ours = invoke(&op, &huge, &huge)
            .expect_err("an overflow")
            .to_string();
        let arrows = arrow_answer(DecimalOperator::Multiply, &huge, &huge)
            .expect_err("an overflow")
            .to_string();
        assert!(ours.contains("Overflow"), "{ours}");
        assert_eq!(ours, arrows);
        // A rescaling multiplier beyond 64 bits (scale 0 against scale 30) goes to arrow too.
        let fine = decimals(&[Some(5)], 38, 30);
        let whole = decimals(&[Some(2)], 5, 0);
        assert_arrows_path(DecimalOperator::Plus, &whole, &fine);
    }

    /// `left <operator> right` goes to arrow's kernel, with arrow's answer.
    fn assert_arrows_path(operator: DecimalOperator, left: &ColumnarValue, right: &ColumnarValue) {
        let op = DecimalOp::new(operator);
        let result_type = op
            .return_type(&[left.data_type(), right.data_type()])
            .expect("return type");
        let narrow = op.narrow(left, right, &result_type).expect("narrow path");
        assert!(narrow.is_none(), "{operator:?} of {left:?} and {right:?}");
        assert_eq!(
            &invoke(&op, left, right).expect("our answer"),
            &arrow_answer(operator, left, right).expect("arrow's answer")
        );
    }

    #[test]
    fn the_types_are_arrows_and_other_types_are_refused() {
        let op = DecimalOp::new(DecimalOperator::Multiply);
        assert_eq!(
            op.return_type(&[DataType::Decimal128(15, 2), DataType::Decimal128(23, 2)])
                .expect("return type"),
            DataType::Decimal128(38, 4)
        );
        let minus = DecimalOp::new(DecimalOperator::Minus);
        assert_eq!(
            minus
                .return_type(&[DataType::Decimal128(20, 0), DataType::Decimal128(15, 2)])
                .expect("return type"),
            DataType::Decimal128(23, 2)
        );
        assert!(op.return_type(&[DataType::Int64, DataType::Int64]).is_err());
        // Scale 20 + 20 is beyond Decimal128's 38.
        assert!(
            op.return_type(&[DataType::Decimal128(38, 20), DataType::Decimal128(38, 20)])
                .is_err()
        );
    }

    async fn run(sql: &str, rule: bool) -> (Vec<RecordBatch>, String) {
        let mut builder = SessionStateBuilder::new().with_default_features();
        if rule {
            builder = builder.with_optimizer_rule(Arc::new(DecimalArithmetic));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let price = Decimal128Array::from(vec![Some(10_495_000), Some(7_25), None, Some(-1_00)])
            .with_precision_and_scale(15, 2)
            .expect("price type");
        let discount = Decimal128Array::from(vec![Some(5), Some(10), Some(7), None])
            .with_precision_and_scale(15, 2)
            .expect("discount type");
        let flag = arrow::array::StringArray::from(vec!["a", "b", "a", "b"]);
        let count = Int64Array::from(vec![1, 2, 3, 4]);
        let batch = RecordBatch::try_from_iter(vec![
            ("price", Arc::new(price) as ArrayRef),
            ("discount", Arc::new(discount) as ArrayRef),
            ("flag", Arc::new(flag) as ArrayRef),
            ("n", Arc::new(count) as ArrayRef),
        ])
        .expect("batch");
        ctx.register_batch("t", batch).expect("register");
        let frame = ctx.sql(sql).await.expect("plan");
        let plan = frame.clone().into_optimized_plan().expect("optimized plan");
        (
            frame.collect().await.expect("answer"),
            plan.display_indent().to_string(),
        )
    }

    #[tokio::test]
    async fn the_rule_hands_decimal_arithmetic_over_and_keeps_answers_and_names() {
        let sql = "SELECT flag, price * (1 - discount), sum(price * (1 - discount) * (1 + discount)) \
                   AS charge, price + discount, n * 2, price * 2.5 FROM t \
                   GROUP BY flag, price, discount, n ORDER BY flag, n";
        let (with_rule, plan) = run(sql, true).await;
        let (without, plain_plan) = run(sql, false).await;
        assert_eq!(with_rule, without);
        assert_eq!(with_rule[0].schema(), without[0].schema());
        assert!(plan.contains("apiary_decimal_multiply("), "{plan}");
        assert!(plan.contains("apiary_decimal_minus("), "{plan}");
        assert!(plan.contains("apiary_decimal_plus("), "{plan}");
        assert!(!plain_plan.contains("apiary_decimal"), "{plain_plan}");
        // Equal scales add without rescaling, and integers are not decimals.
        assert!(plan.contains("t.price + t.discount"), "{plan}");
        assert!(plan.contains("t.n * Int64(2)"), "{plan}");
        let rows: usize = with_rule.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 4);
    }
}
