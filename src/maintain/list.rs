//! Maintenance of list partitions on an integer key (a logical partition
//! number, as in the GitLab CI design): the current value is the highest
//! whose partition holds rows; the plan's `premake` values after it get
//! their partitions ahead of time, retention keeps the `keep` newest values
//! up to the current one, and rows that landed in the default partition get
//! a partition of their value.

use super::{Drained, Limits, MaintainReport, Premade, Skipped, Span, Target};
use crate::db::retry::RetryPolicy;
use crate::partition::existing;
use crate::plan_file::PlanFile;
use crate::sql::{quote_literal, Ident, QualifiedName};
use anyhow::{Context as _, Result};
use tokio_postgres::Client;

/// At most this many distinct values leave the default in one run.
const MAX_DRAINED_VALUES: i64 = 1000;

fn partition_name(plan: &PlanFile, t: &Target, value: i64) -> QualifiedName {
    let template = plan
        .spec
        .partition
        .naming
        .clone()
        .unwrap_or_else(|| "{table}_p{VALUE}".to_string());
    t.table.sibling(Ident::new(crate::partition::naming::render(
        &template,
        t.table.name.as_str(),
        &crate::partition::naming::TokenValues {
            value: Some(value),
            ..Default::default()
        },
    )))
}

/// Every value some partition holds.
fn values_of(have: &[existing::Existing]) -> std::collections::BTreeSet<i64> {
    have.iter().flat_map(|e| e.values.iter().copied()).collect()
}

/// The highest value whose partition holds a row: one cheap probe per
/// partition, newest first, instead of a max() over the whole table.
async fn current_value(client: &Client, have: &[existing::Existing]) -> Result<Option<i64>> {
    let mut parts: Vec<(i64, &QualifiedName)> = have
        .iter()
        .flat_map(|e| e.values.iter().map(move |v| (*v, &e.name)))
        .collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.0));
    for (v, name) in parts {
        let any: bool = client
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM ONLY {name})"), &[])
            .await?
            .get(0);
        if any {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// Creates the partitions of the `premake` values after the current one and
/// says how far they reach; returns the current value.
pub(super) async fn premake(
    client: &Client,
    plan: &PlanFile,
    t: &Target,
    policy: RetryPolicy,
    limits: &Limits,
    report: &mut MaintainReport,
) -> Result<Option<i64>> {
    let have = existing::partitions(client, &t.table, t.kind).await?;
    let taken = values_of(&have);
    let lowest = taken.first().copied();
    let current = match current_value(client, &have).await? {
        Some(v) => Some(v),
        // Nothing written yet: the plan's first value, or the lowest
        // partition's.
        None => plan.spec.partition.initial.as_ref().and_then(|v| v.as_int()).or(lowest),
    };
    let Some(current) = current else {
        return Ok(None);
    };
    let place = super::placement(client, t).await?;
    for v in (current..=current + i64::from(plan.spec.partition.premake)).filter(|v| !taken.contains(v)) {
        let name = partition_name(plan, t, v);
        let lit = quote_literal(&v.to_string());
        let sql = super::premake_sql(
            limits,
            t,
            &place,
            &name,
            &format!("{} = {lit}", t.column),
            &format!("FOR VALUES IN ({lit})"),
        );
        match crate::db::retry::retrying_tx(
            client,
            policy,
            &format!("creating {name}"),
            &[t.table.to_string()],
            &sql,
        )
        .await
        {
            Ok(()) => report.premade.push(Premade {
                partition: name,
                span: Span::Value(v),
            }),
            Err(e) if t.default_partition => report.skipped.push(Skipped::Failed {
                partition: name,
                span: Span::Value(v),
                error: format!("{e:#}"),
            }),
            Err(e) => return Err(e.context(format!("cannot create the partition {name}"))),
        }
    }
    // Running out: the value after the current one has no partition.
    let taken = values_of(&existing::partitions(client, &t.table, t.kind).await?);
    let mut reach = current;
    while taken.contains(&(reach + 1)) {
        reach += 1;
    }
    report.reach = Some(reach.to_string());
    report.running_out = !taken.contains(&(current + 1));
    Ok(Some(current))
}

/// The partitions retention takes out: those of values up to the current
/// one, but for the `keep` newest of them, oldest first.
pub(super) async fn expired(client: &Client, t: &Target, current: i64, keep: u64) -> Result<Vec<QualifiedName>> {
    let have = existing::partitions(client, &t.table, t.kind).await?;
    let mut old: Vec<(i64, QualifiedName)> = have
        .iter()
        .filter(|e| !e.values.is_empty() && e.values.iter().all(|v| *v <= current))
        .map(|e| (*e.values.iter().max().expect("not empty"), e.name.clone()))
        .collect();
    old.sort_by_key(|(v, _)| *v);
    let n = old.len().saturating_sub(keep as usize);
    Ok(old.into_iter().take(n).map(|(_, name)| name).collect())
}

/// Rows that landed in the default partition get the partition of their
/// value: per value one transaction moves them out of the default into a
/// new table (CHECK-constrained, so attaching it scans nothing) and attaches
/// it, so no row is ever invisible. NULL keys stay in the default.
pub(super) async fn drain_default(
    client: &Client,
    plan: &PlanFile,
    t: &Target,
    policy: RetryPolicy,
    limits: &Limits,
    report: &mut MaintainReport,
) -> Result<()> {
    let have = existing::partitions(client, &t.table, t.kind).await?;
    let Some(default) = have.iter().find(|e| e.default).map(|e| e.name.clone()) else {
        return Ok(());
    };
    let key = &t.column;
    let values: Vec<(i64, i64)> = client
        .query(
            &format!(
                "SELECT {key}::int8, count(*) FROM ONLY {default} WHERE {key} IS NOT NULL GROUP BY 1 ORDER BY 1 LIMIT {MAX_DRAINED_VALUES}"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let place = super::placement(client, t).await?;
    let quiet = super::quiet(client, &t.table, &default).await?;
    for (v, rows) in values {
        let name = partition_name(plan, t, v);
        let lit = quote_literal(&v.to_string());
        let cond = format!("{key} = {lit}");
        let sql = super::drain_sql(
            limits,
            t,
            &default,
            &name,
            &place,
            &cond,
            &format!("FOR VALUES IN ({lit})"),
            &quiet,
        );
        super::drain_tx(
            client,
            policy,
            &format!("moving rows out of {default} into {name}"),
            &[t.table.to_string(), default.to_string()],
            &sql,
        )
        .await
        .with_context(|| format!("cannot move the rows of {key} = {v} out of {default}"))?;
        report.drained.push(Drained {
            default: default.clone(),
            partition: name,
            span: Span::Value(v),
            rows,
        });
    }
    Ok(())
}
