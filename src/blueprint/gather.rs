//! The only I/O of planning: every catalog fact the blueprint needs, read
//! with read-only queries. Facts that depend on what is derived (rows
//! below the first partition, names the migration would create) are read
//! after a first derivation says which to read.

use super::derive::{self, key};
use super::facts::{Facts, SplitFacts, MAX_LIST_VALUES};
use crate::access;
use crate::catalog;
use crate::plan_file::{Method, PlanFile, Strategy};
use crate::sql::QualifiedName;
use anyhow::Result;
use tokio_postgres::Client;

pub async fn gather(client: &Client, plan: &PlanFile) -> Result<Facts> {
    let mut f = Facts::new(catalog::server_info(client).await?);
    let table = &plan.table;
    if f.server.version_num < derive::MIN_VERSION {
        return Ok(f);
    }
    let Some(oid) = catalog::relation_oid(client, table).await? else {
        return Ok(f);
    };
    let info = catalog::table_info(client, oid).await?;
    f.citus = citus(client, oid).await?;
    if info.relkind != "r" || info.persistence == "t" {
        f.info = Some(info);
        return Ok(f);
    }
    f.access = Some(access::gather(client, info.oid, plan.spec.method == Method::Move).await?);
    let spec = &plan.spec.partition;
    if let Ok((k, _)) = key::key(plan, &info) {
        let list = spec.by == Strategy::List;
        if !list && k.hash.is_none() {
            (f.min, f.max) = crate::partition::existing::min_max(client, table, &k.column, k.kind).await?;
            if k.kind == crate::partition::KeyKind::Integer {
                f.sequence_max = sequence_max(client, table, &info, &k.column).await?;
            }
        }
        if list && plan.spec.method != Method::Attach {
            if k.list_text {
                f.list_texts = distinct_values::<String>(client, table, &k.column, "text").await?;
            } else {
                f.list_values = distinct_values::<i64>(client, table, &k.column, "int8").await?;
            }
        }
        let has_column = info.columns.iter().any(|c| c.name == k.column);
        if list && plan.spec.method == Method::Attach && has_column && k.list_text {
            let written = spec.initial.as_ref().map(|v| v.text()).unwrap_or_default();
            // The key's type reads the value, as the constraint will: a
            // label the enum lacks or a malformed uuid or date is the
            // plan's mistake, said as such.
            let read = client
                .query_one(&format!("SELECT $1::text::{}::text", k.type_name), &[&written])
                .await;
            f.list_initial = Some(match read {
                Ok(r) => {
                    let value: String = r.get(0);
                    // NULLs count as other values, as for integer keys.
                    f.other_values = client
                        .query_one(
                            &format!(
                                "SELECT count(*) FROM ONLY {table} WHERE {k} IS DISTINCT FROM $1::text::{ty}",
                                k = k.column,
                                ty = k.type_name
                            ),
                            &[&value],
                        )
                        .await?
                        .get(0);
                    Ok(value)
                }
                Err(e) => match e.as_db_error() {
                    Some(d) => Err(d.message().to_string()),
                    None => return Err(e.into()),
                },
            });
        } else if list && plan.spec.method == Method::Attach && has_column {
            let initial = spec.initial.as_ref().and_then(|v| v.as_int()).unwrap_or_default();
            f.other_values = client
                .query_one(
                    &format!(
                        "SELECT count(*) FROM ONLY {table} WHERE {k} IS DISTINCT FROM {initial}",
                        k = k.column
                    ),
                    &[],
                )
                .await?
                .get(0);
        }
    }
    f.info = Some(info);
    // What a first derivation says the migration needs from the catalog.
    if let Ok(d) = derive::draft(plan, &f) {
        if let Some(first) = &d.below {
            let sql = format!(
                "SELECT count(*) FROM ONLY {table} WHERE {k} < $1::text::{ty}",
                k = d.blueprint.key.column,
                ty = d.blueprint.key.type_name
            );
            f.below_first = client.query_one(&sql, &[first]).await?.get(0);
        }
        f.taken = taken(client, &d.relations, &d.functions).await?;
    }
    Ok(f)
}

/// The table's entry in Citus's metadata, where the Citus extension put
/// its catalog: a distributed, reference or Citus-managed local table.
async fn citus(client: &Client, oid: u32) -> Result<Option<(String, String)>> {
    let installed: bool = client
        .query_one("SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL", &[])
        .await?
        .get(0);
    if !installed {
        return Ok(None);
    }
    Ok(client
        .query_opt(
            "SELECT partmethod::text, repmodel::text FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1::oid::regclass",
            &[&oid],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

/// The highest value handed out by the sequences that feed `column` (its
/// own, serial or identity, and any its default draws from).
async fn sequence_max(
    client: &Client,
    table: &QualifiedName,
    info: &crate::catalog::TableInfo,
    column: &crate::sql::Ident,
) -> Result<Option<i64>> {
    let named: Vec<String> = info
        .sequences
        .iter()
        .filter(|s| &s.column == column)
        .map(|s| s.name.to_string())
        .collect();
    let row = client
        .query_one(
            // A sequence never used hands out its start next.
            "SELECT max(coalesce(pg_catalog.pg_sequence_last_value(s::regclass), q.seqstart - q.seqincrement)) \
             FROM unnest($1::text[] || pg_catalog.pg_get_serial_sequence($2, $3)) s \
             JOIN pg_catalog.pg_sequence q ON q.seqrelid = s::regclass WHERE s IS NOT NULL",
            &[&named, &table.to_string(), &column.as_str()],
        )
        .await?;
    Ok(row.get(0))
}

/// The relations and functions of these names that exist already.
async fn taken(client: &Client, relations: &[QualifiedName], functions: &[QualifiedName]) -> Result<Vec<String>> {
    let mut taken = Vec::new();
    for r in relations {
        if catalog::relation_oid(client, r).await?.is_some() {
            taken.push(r.to_string());
        }
    }
    for f in functions {
        if catalog::function_exists(client, f).await? {
            taken.push(format!("{f}()"));
        }
    }
    Ok(taken)
}

/// The distinct values of a list key, ascending: a skip scan where an index
/// leads with the key (each step one index probe), one scan otherwise.
/// At most one more than the cap is read.
async fn distinct_values<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    client: &Client,
    table: &QualifiedName,
    k: &crate::sql::Ident,
    as_type: &str,
) -> Result<Vec<T>> {
    let indexed: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = to_regclass($1) AND a.attname = $2 AND i.indpred IS NULL)",
            &[&table.to_string(), &k.as_str()],
        )
        .await?
        .get(0);
    let limit = MAX_LIST_VALUES as i64 + 1;
    let sql = if indexed {
        format!(
            "WITH RECURSIVE v(x) AS ( \
               (SELECT {k} FROM ONLY {table} WHERE {k} IS NOT NULL ORDER BY {k} LIMIT 1) \
               UNION ALL \
               SELECT (SELECT {k} FROM ONLY {table} WHERE {k} > v.x ORDER BY {k} LIMIT 1) FROM v WHERE v.x IS NOT NULL) \
             SELECT x::{as_type} FROM v WHERE x IS NOT NULL LIMIT {limit}"
        )
    } else {
        format!("SELECT DISTINCT {k}::{as_type} FROM ONLY {table} WHERE {k} IS NOT NULL ORDER BY 1 LIMIT {limit}")
    };
    Ok(client.query(&sql, &[]).await?.iter().map(|r| r.get(0)).collect())
}

pub async fn split_facts(client: &Client, plan: &PlanFile, attached: &super::Blueprint) -> Result<SplitFacts> {
    let table = &attached.table;
    let zero = &attached.old;
    let mut f = SplitFacts {
        server: catalog::server_info(client).await?,
        bound: None,
        min: None,
        info: None,
        taken: Vec::new(),
        bypass_rls: client
            .query_one(
                "SELECT coalesce((SELECT rolsuper OR rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = current_user), false)",
                &[],
            )
            .await?
            .get(0),
    };
    if attached.attach.is_none() {
        return Ok(f);
    }
    f.bound = client
        .query_opt(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid \
             WHERE c.oid = to_regclass($1) AND i.inhparent = to_regclass($2)",
            &[&zero.to_string(), &table.to_string()],
        )
        .await?
        .map(|r| r.get(0));
    if f.bound.is_none() {
        return Ok(f);
    }
    let key = &attached.key;
    // A list partition holds one value, and the split refuses it; a text
    // key has no integer minimum to read.
    if key.list {
        return Ok(f);
    }
    (f.min, _) = crate::partition::existing::min_max(client, zero, &key.column, key.kind).await?;
    if let Some(oid) = catalog::relation_oid(client, table).await? {
        f.info = Some(catalog::table_info(client, oid).await?);
    }
    if let Ok(bp) = derive::split::split(plan, attached, &f) {
        f.taken = taken(client, &derive::split::created(&bp), &[]).await?;
    }
    Ok(f)
}
