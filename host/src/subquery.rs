//! Scalar subqueries that run first, as statements of their own.
//!
//! A statement that reads its largest frame twice, once in a scalar subquery that does not
//! refer to the outer query (`WHERE l_quantity > (SELECT avg(l_quantity) FROM lineitem)`),
//! cannot be split: every fragment would see a different part of each read. Run first, the
//! subquery is a statement like any other and splits as one; its value then replaces it in
//! the statement's text as a typed literal, and the rest may split too. (Where both reads go
//! through the same aggregation, as TPC-H Q15's do through its common table expression, the
//! statement is cut there, once for both, and nothing runs first.)
//!
//! A subquery is taken when it plans on its own (with the statement's common table
//! expressions in front): one that refers to the outer query does not. Only the outermost
//! subqueries are taken; any inside them run within their statement.

use std::ops::ControlFlow;

use apiary_engine::arrow::array::{Array, ArrayRef};
use apiary_engine::arrow::datatypes::DataType;
use apiary_engine::arrow::util::display::array_value_to_string;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    self, CastKind, ExactNumberInfo, Expr, Ident, Query, SetExpr, Statement, Value, VisitMut,
    VisitorMut,
};

use crate::{Error, GuestErrorKind, Result};

/// The prefix of the placeholders that stand for taken subqueries in the statement.
const PLACEHOLDER: &str = "__apiary_scalar_subquery_";

/// A statement whose outermost scalar subqueries were taken out, to run first.
#[derive(Debug)]
pub(crate) struct Hoisting {
    /// The statement, with a placeholder for each subquery.
    statement: Statement,
    /// The subqueries, in order of appearance.
    subqueries: Vec<Query>,
    /// The statement's common table expressions, which the subqueries may read.
    with: Option<ast::With>,
}

impl Hoisting {
    /// The scalar subqueries of the query `sql`, or `None` when it has none (or is not a
    /// single query).
    pub fn of(sql: &str) -> Option<Self> {
        // A statement that spells a placeholder itself is left as it is.
        if sql.contains(PLACEHOLDER) {
            return None;
        }
        let mut statements = DFParser::parse_sql(sql).ok()?;
        let (Some(DFStatement::Statement(statement)), None) =
            (statements.pop_front(), statements.pop_front())
        else {
            return None;
        };
        let mut statement = *statement;
        let Statement::Query(query) = &statement else {
            return None;
        };
        let with = query.with.clone();
        let mut taker = Taker(Vec::new());
        let _ = statement.visit(&mut taker);
        (!taker.0.is_empty()).then_some(Self {
            statement,
            subqueries: taker.0,
            with,
        })
    }

    /// How many subqueries were taken.
    pub fn len(&self) -> usize {
        self.subqueries.len()
    }

    /// The `i`th subquery as a statement of its own, with the statement's common table
    /// expressions in front.
    pub fn standalone(&self, i: usize) -> String {
        let mut query = self.subqueries[i].clone();
        if let Some(with) = &self.with {
            if query.with.is_some() {
                // Its own CTEs may shadow the statement's: keep them in a derived table.
                return format!("{with} SELECT * FROM ({query}) AS {PLACEHOLDER}");
            }
            query.with = Some(with.clone());
        }
        query.to_string()
    }

    /// The statement with each subquery replaced by its value, where `values` has one
    /// (`None` keeps the subquery as it was).
    pub fn substitute(mut self, values: &[Option<Expr>]) -> String {
        let subqueries = std::mem::take(&mut self.subqueries);
        let _ = ast::visit_expressions_mut(&mut self.statement, |expr| {
            if let Some(i) = placeholder(expr) {
                match (values.get(i).cloned().flatten(), subqueries.get(i)) {
                    (Some(value), _) => *expr = value,
                    (None, Some(subquery)) => *expr = Expr::Subquery(Box::new(subquery.clone())),
                    (None, None) => {}
                }
            }
            ControlFlow::<()>::Continue(())
        });
        self.statement.to_string()
    }
}

/// Replaces each outermost scalar subquery with a placeholder, keeping the subquery.
struct Taker(Vec<Query>);

impl VisitorMut for Taker {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Subquery(query) = expr
            && matches!(*query.body, SetExpr::Select(_) | SetExpr::Query(_))
        {
            let index = self.0.len();
            self.0.push((**query).clone());
            *expr = Expr::Identifier(Ident::new(format!("{PLACEHOLDER}{index}")));
        }
        ControlFlow::Continue(())
    }
}

/// Which subquery the placeholder `expr` stands for.
fn placeholder(expr: &Expr) -> Option<usize> {
    match expr {
        Expr::Identifier(ident) => ident.value.strip_prefix(PLACEHOLDER)?.parse().ok(),
        _ => None,
    }
}

/// The value of a scalar subquery whose answer is `columns` (its only column, batch by
/// batch, of type `data_type`), as a literal of that type: the single row's value, or null
/// when there are no rows. `None` for types this does not write as literals (the subquery
/// then stays in the statement).
///
/// # Errors
/// An SQL error ([`Error::GuestError`]) when the subquery returned more than one row.
pub(crate) fn literal(data_type: &DataType, columns: &[ArrayRef]) -> Result<Option<Expr>> {
    let rows: usize = columns.iter().map(|c| c.len()).sum();
    if rows > 1 {
        return Err(Error::GuestError {
            bee: usize::MAX,
            kind: GuestErrorKind::Sql,
            // DataFusion's words for the statement run whole.
            message: "Execution error: Scalar subquery returned more than one row".into(),
        });
    }
    let Some(sql_type) = sql_type(data_type) else {
        return Ok(None);
    };
    let value = match columns.iter().find(|c| !c.is_empty()) {
        Some(column) if column.is_valid(0) => Value::SingleQuotedString(
            array_value_to_string(column, 0)
                .map_err(|e| Error::Internal(format!("writing a subquery's value: {e}")))?,
        ),
        _ => Value::Null,
    };
    Ok(Some(Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(Expr::Value(value.with_empty_span())),
        data_type: sql_type,
        array: false,
        format: None,
    }))
}

/// The SQL type that casts back to `data_type` exactly, for the types written as literals.
fn sql_type(data_type: &DataType) -> Option<ast::DataType> {
    Some(match data_type {
        DataType::Boolean => ast::DataType::Boolean,
        DataType::Int8 => ast::DataType::TinyInt(None),
        DataType::Int16 => ast::DataType::SmallInt(None),
        DataType::Int32 => ast::DataType::Int(None),
        DataType::Int64 => ast::DataType::BigInt(None),
        DataType::Float32 => ast::DataType::Real,
        DataType::Float64 => ast::DataType::Double(ExactNumberInfo::None),
        DataType::Decimal128(precision, scale) => ast::DataType::Decimal(
            ExactNumberInfo::PrecisionAndScale(u64::from(*precision), i64::from(*scale)),
        ),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ast::DataType::Varchar(None),
        DataType::Date32 => ast::DataType::Date,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use apiary_engine::arrow::array::{Date32Array, Decimal128Array, Float64Array, StringArray};

    use super::*;

    #[test]
    fn outermost_subqueries_are_taken_with_the_statements_ctes() {
        let sql = "WITH r AS (SELECT a, sum(b) AS t FROM f GROUP BY a) \
                   SELECT a FROM r WHERE t = (SELECT max(t) FROM r WHERE t < (SELECT 9)) \
                   AND a IN (SELECT a FROM g)";
        let hoisting = Hoisting::of(sql).expect("a subquery");
        // `IN (subquery)` is no scalar subquery; the nested `(SELECT 9)` stays inside.
        assert_eq!(hoisting.len(), 1);
        assert_eq!(
            hoisting.standalone(0),
            "WITH r AS (SELECT a, sum(b) AS t FROM f GROUP BY a) \
             SELECT max(t) FROM r WHERE t < (SELECT 9)"
        );
        let value = literal(
            &DataType::Float64,
            &[Arc::new(Float64Array::from(vec![2.5]))],
        )
        .expect("one");
        assert_eq!(
            hoisting.substitute(&[value]),
            "WITH r AS (SELECT a, sum(b) AS t FROM f GROUP BY a) \
             SELECT a FROM r WHERE t = CAST('2.5' AS DOUBLE) AND a IN (SELECT a FROM g)"
        );
        assert!(Hoisting::of("SELECT a FROM f WHERE a IN (SELECT a FROM g)").is_none());
        assert!(Hoisting::of("SELECT 1; SELECT (SELECT 2)").is_none());
        let spelled = "SELECT __apiary_scalar_subquery_3 FROM f WHERE a = (SELECT 1)";
        assert!(Hoisting::of(spelled).is_none());
    }

    #[test]
    fn a_subquery_kept_goes_back_as_it_was() {
        let sql = "SELECT a FROM f WHERE b > (SELECT avg(b) FROM g WHERE g.a = f.a)";
        let hoisting = Hoisting::of(sql).expect("a subquery");
        assert_eq!(
            hoisting.standalone(0),
            "SELECT avg(b) FROM g WHERE g.a = f.a"
        );
        assert_eq!(hoisting.substitute(&[None]), sql);
        // Its own CTEs stay its own.
        let sql = "WITH r AS (SELECT 1 AS x) SELECT x FROM r \
                   WHERE x < (WITH r AS (SELECT 2 AS x) SELECT x FROM r)";
        assert_eq!(
            Hoisting::of(sql).expect("a subquery").standalone(0),
            "WITH r AS (SELECT 1 AS x) SELECT * FROM \
             (WITH r AS (SELECT 2 AS x) SELECT x FROM r) AS __apiary_scalar_subquery_"
        );
    }

    #[test]
    fn values_become_literals_of_their_type_and_no_rows_null() {
        let text = |columns: &[ArrayRef]| {
            literal(columns[0].data_type(), columns)
                .expect("at most one row")
                .map(|e| e.to_string())
        };
        let decimal = Decimal128Array::from(vec![17_726_272_087_i128])
            .with_precision_and_scale(38, 4)
            .expect("decimal");
        assert_eq!(
            text(&[Arc::new(decimal)]).as_deref(),
            Some("CAST('1772627.2087' AS DECIMAL(38,4))")
        );
        assert_eq!(
            text(&[Arc::new(Date32Array::from(vec![9131]))]).as_deref(),
            Some("CAST('1995-01-01' AS DATE)")
        );
        assert_eq!(
            text(&[Arc::new(StringArray::from(vec!["it's"]))]).as_deref(),
            Some("CAST('it''s' AS VARCHAR)")
        );
        // No rows, or a null: a typed null. Batches may be empty before the row.
        let empty = Float64Array::from(Vec::<f64>::new());
        assert_eq!(
            text(&[Arc::new(empty.clone())]).as_deref(),
            Some("CAST(NULL AS DOUBLE)")
        );
        assert_eq!(
            text(&[
                Arc::new(empty),
                Arc::new(Float64Array::from(vec![Some(0.1)]))
            ])
            .as_deref(),
            Some("CAST('0.1' AS DOUBLE)")
        );
        assert_eq!(
            text(&[Arc::new(Float64Array::from(vec![None::<f64>]))]).as_deref(),
            Some("CAST(NULL AS DOUBLE)")
        );
        // Types without a literal here keep their subquery.
        let times = apiary_engine::arrow::array::TimestampNanosecondArray::from(vec![1]);
        assert!(text(&[Arc::new(times) as ArrayRef]).is_none());
        // No batches at all.
        let none = literal(&DataType::Date32, &[])
            .expect("none")
            .map(|e| e.to_string());
        assert_eq!(none.as_deref(), Some("CAST(NULL AS DATE)"));
        let two = [Arc::new(Float64Array::from(vec![1.0, 2.0])) as ArrayRef];
        let err = literal(&DataType::Float64, &two).expect_err("two");
        assert!(
            err.to_string()
                .contains("Scalar subquery returned more than one row"),
            "{err}"
        );
    }
}
