//! Statements the host answers itself: SHOW, DESCRIBE, CREATE, DROP and INSERT.
//!
//! These read or change the registry and ledgers, so they run on the host; only INSERT's
//! source query touches cells, and it runs in a chamber like any other query. Both Apiary's
//! words and the conventional ones are accepted (HIVE/DATABASE, BOX/SCHEMA, FRAME/TABLE).

use std::sync::Arc;

use apiary_engine::arrow::array::{ArrayRef, BooleanArray, StringArray, UInt64Array};
use apiary_engine::arrow::datatypes::{DataType, Field, Schema};
use apiary_engine::arrow::record_batch::RecordBatch;
use apiary_engine::lake::FrameRef;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Statement, TableObject};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::query::{QueryOutput, QuerySession, sql_error, unquote};
use crate::swarm::temperature::wait_to_write;
use crate::{Error, Result, WriteMode};

fn strings(columns: &[(&str, Vec<String>)]) -> Result<RecordBatch> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, _)| Field::new(*n, DataType::Utf8, false))
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|(_, v)| Arc::new(StringArray::from(v.clone())) as ArrayRef)
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| Error::Internal(e.to_string()))
}

fn usage(sql: &str, hint: &str) -> Error {
    Error::Config(format!("cannot read `{sql}`: {hint}"))
}

impl QuerySession {
    fn frame_ref(&self, name: &str) -> Result<FrameRef> {
        let parts: Vec<String> = name.split('.').map(unquote).collect();
        Ok(FrameRef::parse(
            &parts.join("."),
            &self.hive,
            &self.box_name,
        )?)
    }

    pub(crate) async fn show(
        &self,
        sql: &str,
        words: &[&str],
        upper: &[&str],
    ) -> Result<QueryOutput> {
        let registry = self.lake.registry().await?;
        let scope = match (upper.get(2), words.get(3)) {
            (Some(&"IN") | Some(&"FROM"), Some(scope)) => Some(*scope),
            (None, None) => None,
            _ => {
                return Err(usage(
                    sql,
                    "use SHOW HIVES, SHOW BOXES [IN hive], SHOW FRAMES [IN hive.box] or SHOW FUNCTIONS",
                ));
            }
        };
        let batch = match upper.get(1) {
            Some(&"FUNCTIONS") if upper.len() == 2 => return show_functions(&registry),
            Some(&"HIVES") | Some(&"DATABASES") => {
                strings(&[("hive", registry.hives.keys().cloned().collect())])?
            }
            Some(&"BOXES") | Some(&"SCHEMAS") => {
                let hive = scope.map_or_else(|| self.hive.clone(), unquote);
                let boxes = registry
                    .hives
                    .get(&hive)
                    .ok_or_else(|| Error::NotFound(format!("hive `{hive}` does not exist")))?;
                strings(&[
                    ("hive", vec![hive.clone(); boxes.len()]),
                    ("box", boxes.keys().cloned().collect()),
                ])?
            }
            Some(&"FRAMES") | Some(&"TABLES") => {
                let (hive, box_name) = match scope.map(|s| s.split_once('.')) {
                    None => (self.hive.clone(), self.box_name.clone()),
                    Some(Some((h, b))) => (unquote(h), unquote(b)),
                    Some(None) => (unquote(scope.unwrap_or_default()), String::new()),
                };
                let boxes = registry
                    .hives
                    .get(&hive)
                    .ok_or_else(|| Error::NotFound(format!("hive `{hive}` does not exist")))?;
                let mut rows: (Vec<String>, Vec<String>, Vec<String>) = Default::default();
                for (b, frames) in boxes
                    .iter()
                    .filter(|(b, _)| box_name.is_empty() || **b == box_name)
                {
                    for f in frames.keys() {
                        rows.0.push(hive.clone());
                        rows.1.push(b.clone());
                        rows.2.push(f.clone());
                    }
                }
                if !box_name.is_empty() && !boxes.contains_key(&box_name) {
                    return Err(Error::NotFound(format!(
                        "box `{hive}.{box_name}` does not exist"
                    )));
                }
                strings(&[("hive", rows.0), ("box", rows.1), ("frame", rows.2)])?
            }
            _ => {
                return Err(usage(
                    sql,
                    "use SHOW HIVES, SHOW BOXES [IN hive], SHOW FRAMES [IN hive.box] or SHOW FUNCTIONS",
                ));
            }
        };
        Ok(QueryOutput::host(batch, Vec::new()))
    }

    pub(crate) async fn describe(&self, name: &str) -> Result<QueryOutput> {
        let frame = self.frame_ref(name)?;
        let (_, state) = self.lake.frame(&frame.to_string()).await?;
        let fields = &state.schema.fields;
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("column", DataType::Utf8, false),
                Field::new("type", DataType::Utf8, false),
                Field::new("nullable", DataType::Boolean, false),
                Field::new("partition", DataType::Boolean, false),
            ])),
            vec![
                Arc::new(StringArray::from_iter_values(
                    fields.iter().map(|f| f.name.clone()),
                )),
                Arc::new(StringArray::from_iter_values(
                    fields.iter().map(|f| f.data_type.to_string()),
                )),
                Arc::new(BooleanArray::from_iter(
                    fields.iter().map(|f| Some(f.nullable)),
                )),
                Arc::new(BooleanArray::from_iter(
                    fields
                        .iter()
                        .map(|f| Some(state.partition_by.contains(&f.name))),
                )),
            ],
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        let partitioning = if state.partition_by.is_empty() {
            "not partitioned".to_owned()
        } else {
            format!("partitioned by {}", state.partition_by.join(", "))
        };
        let note = format!(
            "frame {frame}: version {}, {} cells, {} rows, {} bytes, {partitioning}",
            state.version,
            state.cells().count(),
            state.rows(),
            state.bytes()
        );
        Ok(QueryOutput::host(batch, vec![note]))
    }

    pub(crate) async fn insert(&mut self, sql: &str) -> Result<QueryOutput> {
        let statements =
            Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| Error::GuestError {
                bee: usize::MAX,
                kind: crate::GuestErrorKind::Sql,
                message: e.to_string(),
            })?;
        let [Statement::Insert(insert)] = statements.as_slice() else {
            return Err(usage(
                sql,
                "expected one INSERT INTO frame SELECT ... or VALUES ...",
            ));
        };
        let TableObject::TableName(table) = &insert.table else {
            return Err(usage(sql, "INSERT INTO takes a frame name"));
        };
        let source = insert
            .source
            .as_ref()
            .ok_or_else(|| usage(sql, "INSERT needs a SELECT or VALUES"))?;
        let frame = self.frame_ref(&table.to_string())?;
        let (_, state) = self.lake.frame(&frame.to_string()).await?;
        let targets: Vec<String> = if insert.columns.is_empty() {
            state.schema.fields.iter().map(|f| f.name.clone()).collect()
        } else {
            insert
                .columns
                .iter()
                .map(|c| unquote(&c.to_string()))
                .collect()
        };
        // Assign by position, cast to the frame's types in the chamber, then write by name.
        let mut select = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            let field = state.schema.field(target).ok_or_else(|| {
                Error::NotFound(format!("frame `{frame}` has no column `{target}`"))
            })?;
            select.push(format!(
                "arrow_cast(__src.__c{i}, '{}') AS \"{}\"",
                field.data_type,
                target.replace('"', "\"\"")
            ));
        }
        let aliases: Vec<String> = (0..targets.len()).map(|i| format!("__c{i}")).collect();
        let wrapped = format!(
            "SELECT {} FROM ({source}) AS __src({})",
            select.join(", "),
            aliases.join(", ")
        );
        let output = self.query(&wrapped).await?;
        let rows: usize = output.batches.iter().map(RecordBatch::num_rows).sum();
        let note = if rows == 0 {
            format!("inserted 0 rows into {frame}")
        } else {
            let temperature = match &self.swarm {
                Some(swarm) => Some(
                    wait_to_write(&self.pool, swarm.hot_writes, swarm.deadline, &swarm.node)
                        .await?,
                ),
                None => None,
            };
            let result = self
                .lake
                .write(&frame.to_string(), &output.batches, WriteMode::Append)
                .await?;
            format!(
                "inserted {} rows into {frame} (version {}, {} cells{})",
                result.rows,
                result.version,
                result.cells,
                temperature
                    .map(|t| format!("; node {t}"))
                    .unwrap_or_default()
            )
        };
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "count",
                DataType::UInt64,
                false,
            )])),
            vec![Arc::new(UInt64Array::from(vec![rows as u64]))],
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(QueryOutput::host(batch, vec![note]))
    }
}

/// CREATE and DROP of hives, boxes and frames.
/// `CREATE [OR REPLACE] FUNCTION name FROM 'module.wasm'` and `DROP FUNCTION [IF EXISTS]
/// name`. Creating a function that exists replaces it (in one registry version).
pub(crate) async fn function_ddl(
    session: &QuerySession,
    sql: &str,
    words: &[&str],
    upper: &[&str],
) -> Result<QueryOutput> {
    if upper[0] == "DROP" {
        let (if_exists, name) = match (&upper[2..], &words[2..]) {
            (["IF", "EXISTS", _], [_, _, name]) => (true, *name),
            ([_], [name]) => (false, *name),
            _ => return Err(usage(sql, "use DROP FUNCTION [IF EXISTS] name")),
        };
        let name = unquote(name);
        session.lake.drop_function(&name, if_exists).await?;
        return Ok(QueryOutput::message(format!("function {name} dropped")));
    }
    let hint = "use CREATE [OR REPLACE] FUNCTION name FROM 'path/to/module.wasm'";
    let skip = if upper.get(1) == Some(&"OR") { 4 } else { 2 };
    let (Some(name), Some(&"FROM")) = (words.get(skip), upper.get(skip + 1)) else {
        return Err(usage(sql, hint));
    };
    let path = sql
        .splitn(skip + 3, char::is_whitespace)
        .last()
        .map(str::trim)
        .and_then(|p| p.strip_prefix('\''))
        .and_then(|p| p.strip_suffix('\''))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| usage(sql, hint))?;
    let name = unquote(name);
    let registered = crate::udf::register_module(
        &session.lake,
        session.pool.engine(),
        std::path::Path::new(path),
        std::slice::from_ref(&name),
    )
    .await?;
    let verb = if registered.iter().any(|r| r.replaced) {
        "replaced"
    } else {
        "created"
    };
    let signatures: Vec<String> = registered.iter().map(|r| r.signature.to_string()).collect();
    Ok(QueryOutput::message(format!(
        "function {} {verb}",
        signatures.join(", ")
    )))
}

/// `SHOW FUNCTIONS`: the registered user-defined functions.
pub(crate) fn show_functions(registry: &crate::RegistryState) -> Result<QueryOutput> {
    let functions = &registry.functions;
    let column = |f: &dyn Fn(&crate::FunctionEntry) -> String| -> Vec<String> {
        functions.values().map(f).collect()
    };
    let batch = strings(&[
        ("function", functions.keys().cloned().collect()),
        ("arguments", column(&|e| e.args.join(", "))),
        ("returns", column(&|e| e.returns.clone())),
        ("volatility", column(&|e| e.volatility.clone())),
        ("module", column(&|e| e.module.chars().take(12).collect())),
        ("file", column(&|e| e.file.clone())),
    ])?;
    Ok(QueryOutput::host(batch, Vec::new()))
}

pub(crate) async fn ddl(
    session: &mut QuerySession,
    sql: &str,
    words: &[&str],
    upper: &[&str],
) -> Result<QueryOutput> {
    let create = upper[0] == "CREATE";
    let kind = upper.get(1).copied().unwrap_or_default();
    let (flag, rest) = match (create, upper.get(2..5)) {
        (true, Some(["IF", "NOT", "EXISTS"])) => (true, &words[5..]),
        (false, Some(["IF", "EXISTS", ..])) => (true, &words[4..]),
        _ => (false, words.get(2..).unwrap_or_default()),
    };
    let hint = "use CREATE|DROP HIVE|BOX|FRAME (or DATABASE|SCHEMA|TABLE) [IF [NOT] EXISTS] name";
    let name = rest
        .first()
        .map(|n| n.split('(').next().unwrap_or_default())
        .filter(|n| !n.is_empty());
    let name = name.ok_or_else(|| usage(sql, hint))?;
    let lake = session.lake.clone();
    let note = match (create, kind) {
        (true, "HIVE" | "DATABASE") => {
            lake.create_hive(&unquote(name), flag).await?;
            format!("hive {} ready", unquote(name))
        }
        (false, "HIVE" | "DATABASE") => {
            lake.drop_hive(&unquote(name), flag).await?;
            format!("hive {} dropped", unquote(name))
        }
        (_, "BOX" | "SCHEMA") => {
            let (hive, box_name) = match name.split_once('.') {
                Some((h, b)) => (unquote(h), unquote(b)),
                None => (session.hive.clone(), unquote(name)),
            };
            if create {
                lake.create_box(&hive, &box_name, flag).await?;
                format!("box {hive}.{box_name} ready")
            } else {
                lake.drop_box(&hive, &box_name, flag).await?;
                format!("box {hive}.{box_name} dropped")
            }
        }
        (false, "FRAME" | "TABLE") => {
            let frame = session.frame_ref(name)?;
            lake.drop_frame(&frame.to_string(), flag).await?;
            format!("frame {frame} dropped; its cells stay until vacuum")
        }
        (true, "FRAME" | "TABLE") => {
            let frame = session.frame_ref(name)?;
            let open = sql.find('(').ok_or_else(|| {
                usage(
                    sql,
                    "CREATE FRAME name (column type, ...) [PARTITIONED BY (column, ...)]",
                )
            })?;
            let lower = sql.to_ascii_lowercase();
            let (columns, partition_by) = match lower.rfind("partitioned by") {
                Some(at) if at > open => {
                    let list = sql[at + "partitioned by".len()..]
                        .trim()
                        .trim_start_matches('(')
                        .trim_end_matches(')');
                    (
                        &sql[open..at],
                        list.split(',')
                            .map(|c| unquote(c.trim()))
                            .filter(|c| !c.is_empty())
                            .collect(),
                    )
                }
                _ => (&sql[open..], Vec::new()),
            };
            let probe = format!("CREATE TABLE __apiary_probe {columns}");
            let ctx = SessionContext::new();
            let plan = ctx
                .state()
                .create_logical_plan(&probe)
                .await
                .map_err(sql_error)?;
            let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(table)) = plan else {
                return Err(usage(sql, "CREATE FRAME name (column type, ...)"));
            };
            // SQL's VARCHAR plans as a view type; frames store the plain types.
            let schema = Schema::new(
                table
                    .input
                    .schema()
                    .as_arrow()
                    .fields()
                    .iter()
                    .map(|f| {
                        let plain = match f.data_type() {
                            DataType::Utf8View => DataType::Utf8,
                            DataType::BinaryView => DataType::Binary,
                            other => other.clone(),
                        };
                        f.as_ref().clone().with_data_type(plain)
                    })
                    .collect::<Vec<_>>(),
            );
            let partition_refs: Vec<&str> = partition_by.iter().map(String::as_str).collect();
            lake.create_frame(&frame.to_string(), &schema, &partition_refs, flag)
                .await?;
            format!("frame {frame} ready")
        }
        _ => return Err(usage(sql, hint)),
    };
    Ok(QueryOutput::message(note))
}
