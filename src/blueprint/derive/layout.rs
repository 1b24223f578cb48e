//! The partitions: their bounds and names, the attach method's cutoff,
//! the default partition, and where the original goes when it steps
//! aside.

use super::Acc;
use crate::blueprint::facts::{Facts, MAX_LIST_VALUES};
use crate::blueprint::{names, AttachDef, Key, KeyIndex, UniqueDef};
use crate::catalog::TableInfo;
use crate::findings::codes;
use crate::partition::{self, bounds, KeyKind, KeyValue, LayoutInput};
use crate::plan_file::{Method, PlanFile};
use crate::sql::{Ident, QualifiedName};
use anyhow::Result;

pub struct Layout {
    pub partitions: Vec<partition::Partition>,
    pub attach: Option<AttachDef>,
    pub default_partition: Option<Ident>,
    /// Where the original goes: behind the view (move), retired but kept
    /// in step (sync), or the first partition (attach).
    pub old: QualifiedName,
    /// The first partition's lower bound, when rows may lie below it.
    pub below: Option<String>,
}

pub fn key_less(a: KeyValue, b: KeyValue) -> bool {
    match (a, b) {
        (KeyValue::Instant(a), KeyValue::Instant(b)) => a < b,
        (KeyValue::Local(a), KeyValue::Local(b)) => a < b,
        (KeyValue::Day(a), KeyValue::Day(b)) => a < b,
        (KeyValue::Int(a), KeyValue::Int(b)) => a < b,
        _ => false,
    }
}

/// A partition name from the plan's template and a value.
fn named(template: &str, table: &QualifiedName, value: i64) -> String {
    partition::naming::render(
        template,
        table.name.as_str(),
        &partition::naming::TokenValues {
            value: Some(value),
            ..Default::default()
        },
    )
}

/// A partition name for a text, enum, uuid or date value.
fn named_text(template: &str, table: &QualifiedName, value: &str) -> String {
    partition::naming::render(
        template,
        table.name.as_str(),
        &partition::naming::TokenValues {
            text: Some(value.to_string()),
            ..Default::default()
        },
    )
}

pub fn derive(
    plan: &PlanFile,
    facts: &Facts,
    info: &TableInfo,
    key: &Key,
    uniques: &[UniqueDef],
    acc: &mut Acc,
) -> Result<Layout> {
    let spec = &plan.spec.partition;
    let table = &plan.table;
    let method = plan.spec.method;
    let list = key.list;
    let tz: chrono_tz::Tz = spec
        .time_zone
        .parse()
        .map_err(|_| plan.key_error("partition.time_zone", "is not a known time zone"))?;
    let template = spec.naming.clone().unwrap_or_else(|| {
        if list {
            "{table}_p{VALUE}".to_string()
        } else {
            partition::naming::default_template(spec.interval).to_string()
        }
    });
    let start = match (&spec.start, &plan.spec.attach.cutoff) {
        (_, Some(c)) if method == Method::Attach => {
            Some(bounds::parse_start(key.kind, tz, c).map_err(|e| plan.key_error("attach.cutoff", &e))?)
        }
        (Some(b), _) => Some(bounds::parse_start(key.kind, tz, b).map_err(|e| plan.key_error("partition.start", &e))?),
        (None, _) => None,
    };
    let initial = spec.initial.as_ref().and_then(|v| v.as_int()).unwrap_or_default();
    let attach_text = method == Method::Attach && list && key.list_text;
    let text_initial = if attach_text {
        Some(match &facts.list_initial {
            Some(Ok(v)) => v.clone(),
            Some(Err(why)) => {
                return Err(plan
                    .key_error(
                        "partition.initial",
                        &format!(
                            "is `{}`, which {} of type {} does not take: {why}",
                            spec.initial.as_ref().map(|v| v.text()).unwrap_or_default(),
                            key.column,
                            key.type_name
                        ),
                    )
                    .into())
            }
            // Facts written by hand: the value as the plan gives it.
            None => spec.initial.as_ref().map(|v| v.text()).unwrap_or_default(),
        })
    } else {
        None
    };
    let mut layout = if let Some(m) = key.hash {
        let template = spec.naming.clone().unwrap_or_else(|| "{table}_h{VALUE}".to_string());
        (0..i64::from(m))
            .map(|r| partition::Partition {
                name: named(&template, table, r),
                from: r.to_string(),
                to: m.to_string(),
            })
            .collect()
    } else if attach_text {
        // No value follows another: none is made ahead.
        if !spec.default_partition {
            acc.warn(codes::LIST_VALUES_FIXED, format!(
                "after the swap a row with a value of {} other than {} is refused: no value of a text, enum, uuid or date key follows another, so no partition is made ahead; set partition.default_partition: true, or create a partition for each new value before the application writes it",
                key.column,
                text_initial.as_deref().unwrap_or_default()
            ));
        }
        Vec::new()
    } else if list && key.list_text {
        list_texts(plan, facts, key, &template, acc)
    } else if list {
        list_values(plan, facts, key, acc)
            .into_iter()
            .map(|v| partition::Partition {
                name: named(&template, table, v),
                from: v.to_string(),
                to: v.to_string(),
            })
            .collect()
    } else {
        partition::layout(&LayoutInput {
            kind: key.kind,
            interval: spec.interval,
            step: spec.step.map(|s| s.0),
            tz,
            start,
            // An empty table starts where its sequence stands.
            min: facts.min.or(facts.sequence_max.map(KeyValue::Int)),
            max: highest(facts),
            now: facts.server.now,
            premake: spec.premake,
            template: &template,
            table: table.name.as_str(),
        })
        .map_err(|e| plan.key_error("partition", &e))?
    };
    let attach = match method {
        Method::Attach if list => Some(attach_list(plan, facts, info, key, text_initial.clone(), uniques, acc)),
        Method::Attach => Some(attach_range(plan, facts, key, tz, uniques, &mut layout, acc)),
        _ => None,
    };
    if layout.is_empty() && !attach_text {
        return Err(crate::error::Refusal::new(format!(
            "{table} holds no value of {} yet, and a list key of this type gets one partition per value it holds; partition it once it has rows, or by range or hash",
            key.column
        ))
        .into());
    }
    check_names(plan, &layout)?;
    let first = layout.first().and_then(|p| bounds::first_bound_value(key.kind, tz, p));
    let below = match (first, facts.min) {
        _ if method == Method::Attach || key.hash.is_some() => None,
        (Some(f), Some(m)) if key_less(m, f) => Some(layout[0].from.clone()),
        _ => None,
    };
    let default_partition = spec.default_partition.then(|| names::default_partition(table));
    if below.is_some() && facts.below_first > 0 {
        let n = facts.below_first;
        if default_partition.is_some() {
            acc.warn(
                codes::ROWS_IN_DEFAULT,
                format!(
                    "{n} existing rows have keys below the first bound {} and will land in the default partition",
                    layout[0].from
                ),
            );
        } else {
            acc.refuse(format!(
                "{n} existing rows have keys below the first bound {} and no partition would hold them; move partition.start back or set partition.default_partition: true",
                layout[0].from
            ));
        }
    }
    if spec.default_partition {
        acc.warn(codes::DEFAULT_PARTITION, "a DEFAULT partition makes every later partition creation scan it under a strong lock, and forbids DETACH ... CONCURRENTLY".into());
    }
    let old = match method {
        // A list partition is named for its value, as the others are.
        Method::Attach if list => {
            let name = match &text_initial {
                Some(v) => named_text(&template, table, v),
                None => named(&template, table, initial),
            };
            check_names(
                plan,
                &[partition::Partition {
                    name: name.clone(),
                    from: String::new(),
                    to: String::new(),
                }],
            )?;
            table.sibling(Ident::new(name))
        }
        // An integer layout from 0 names its first new partition `_p0`,
        // the name the original would take.
        Method::Attach if layout.iter().any(|p| p.name == names::old(table, method).name.as_str()) => {
            names::first_partition_below(table)
        }
        _ => names::old(table, method),
    };
    Ok(Layout {
        partitions: layout,
        attach,
        default_partition,
        old,
        below,
    })
}

/// The values a list key holds, refused beyond `MAX_LIST_VALUES`.
fn at_most<T: Clone>(plan: &PlanFile, key: &Key, values: &[T], acc: &mut Acc) -> Vec<T> {
    if values.len() > MAX_LIST_VALUES {
        acc.refuse(format!(
            "{} holds more than {MAX_LIST_VALUES} distinct values of {}; list partitioning makes one partition per value (use hash, or range on it)",
            plan.table, key.column
        ));
    }
    values.iter().take(MAX_LIST_VALUES).cloned().collect()
}

/// A list key of text, enum, uuid or date values: one partition per value
/// the table holds. No value follows another, so none is made ahead: a
/// new value needs a default partition, or a partition made for it.
fn list_texts(plan: &PlanFile, facts: &Facts, key: &Key, template: &str, acc: &mut Acc) -> Vec<partition::Partition> {
    let held = at_most(plan, key, &facts.list_texts, acc);
    if !plan.spec.partition.default_partition {
        acc.warn(codes::LIST_VALUES_FIXED, format!(
            "a row with a value of {} that no partition takes is refused from the route (move) or swap (sync) on: the partitions are those of the values the table holds now ({}); set partition.default_partition: true to take new values",
            key.column,
            if held.is_empty() { "none".to_string() } else { held.join(", ") }
        ));
    }
    held.into_iter()
        .map(|v| partition::Partition {
            name: named_text(template, &plan.table, &v),
            from: v.clone(),
            to: v,
        })
        .collect()
}

/// Attach: the original is the partition of `initial`, and the partitions
/// for the values after it are made. Move and sync: one partition for each
/// value the table holds, and the plan's premade values after the highest.
fn list_values(plan: &PlanFile, facts: &Facts, key: &Key, acc: &mut Acc) -> Vec<i64> {
    let spec = &plan.spec.partition;
    let initial = spec.initial.as_ref().and_then(|v| v.as_int()).unwrap_or_default();
    if plan.spec.method == Method::Attach {
        return (1..=i64::from(spec.premake.max(1))).map(|i| initial + i).collect();
    }
    let mut held = at_most(plan, key, &facts.list_values, acc);
    if spec.initial.is_some() && !held.contains(&initial) {
        held.push(initial);
        held.sort_unstable();
    }
    let top = held.last().copied().unwrap_or(initial);
    held.extend((1..=i64::from(spec.premake)).map(|i| top + i));
    if held.is_empty() {
        held.push(initial);
    }
    held
}

/// The highest key the layout must cover: the largest in the table, or
/// beyond it the highest value the key's sequence has handed out, which
/// the next rows follow.
fn highest(facts: &Facts) -> Option<KeyValue> {
    match (facts.max, facts.sequence_max) {
        (Some(KeyValue::Int(m)), Some(s)) => Some(KeyValue::Int(m.max(s))),
        (None, Some(s)) => Some(KeyValue::Int(s)),
        (m, _) => m,
    }
}

/// Attach by list: the original keeps every existing row as the partition
/// of one value (the key column is added where it is missing).
fn attach_list(
    plan: &PlanFile,
    facts: &Facts,
    info: &TableInfo,
    key: &Key,
    text_initial: Option<String>,
    uniques: &[UniqueDef],
    acc: &mut Acc,
) -> AttachDef {
    let table = &plan.table;
    let initial = text_initial.unwrap_or_else(|| {
        let n = plan.spec.partition.initial.as_ref().and_then(|v| v.as_int());
        n.unwrap_or_default().to_string()
    });
    let has_column = info.columns.iter().any(|c| c.name == key.column);
    let add_column = if has_column {
        if facts.other_values > 0 {
            acc.refuse(format!(
                "{} existing rows have {} other than {initial}; the original can only become the partition of that one value",
                facts.other_values, key.column
            ));
        }
        None
    } else {
        Some(key.type_name.clone())
    };
    if add_column.is_some() {
        acc.note(codes::KEY_COLUMN_ADDED, format!(
            "the column {} bigint NOT NULL DEFAULT {initial} is added to {table} (no rewrite: the default is stored once); the application sets it for rows of later partitions",
            key.column
        ));
    }
    acc.warn(
        codes::ATTACH_WINDOW,
        format!(
            "between the constrain and swap phases the original refuses rows with {} other than {initial}",
            key.column
        ),
    );
    AttachDef {
        key_indexes: key_indexes(uniques),
        cutoff: initial,
        add_column,
        check: names::cutoff_check(table),
    }
}

/// Attach by range: the original keeps every existing key as the first
/// partition; new partitions start at the cutoff.
fn attach_range(
    plan: &PlanFile,
    facts: &Facts,
    key: &Key,
    tz: chrono_tz::Tz,
    uniques: &[UniqueDef],
    layout: &mut Vec<partition::Partition>,
    acc: &mut Acc,
) -> AttachDef {
    let now = facts.server.now;
    if plan.spec.attach.cutoff.is_none() {
        let now = match key.kind {
            KeyKind::TimestampTz => KeyValue::Instant(now),
            KeyKind::Timestamp => KeyValue::Local(now.with_timezone(&tz).naive_local()),
            KeyKind::Date => KeyValue::Day(now.with_timezone(&tz).date_naive()),
            KeyKind::Integer => KeyValue::Int(i64::MIN),
        };
        let newest = match highest(facts) {
            Some(m) if key_less(now, m) => m,
            _ => now,
        };
        let first_after = layout
            .iter()
            .position(|p| bounds::first_bound_value(key.kind, tz, p).is_some_and(|b| key_less(newest, b)))
            .unwrap_or(layout.len().saturating_sub(1));
        layout.drain(..first_after);
    }
    let cutoff = layout[0].from.clone();
    let first = layout.first().and_then(|p| bounds::first_bound_value(key.kind, tz, p));
    if let (Some(m), Some(c)) = (facts.max, first) {
        if !key_less(m, c) {
            acc.refuse(format!(
                "existing rows have keys at or after the cutoff {cutoff}; the original can only become the partition of keys below it"
            ));
        }
    }
    if let (Some(s), Some(KeyValue::Int(c))) = (facts.sequence_max, first) {
        if s >= c && facts.max.is_none_or(|m| key_less(m, KeyValue::Int(c))) {
            acc.refuse(format!(
                "the sequence of {} has handed out {s}, at or after the cutoff {cutoff}, so the next rows would be refused; set attach.cutoff beyond it",
                key.column
            ));
        }
    }
    acc.warn(codes::ATTACH_WINDOW, format!(
        "between the constrain and swap phases the original refuses rows with {} at or after {cutoff}; the cutoff must lie beyond every key the application writes until the swap",
        key.column
    ));
    AttachDef {
        cutoff,
        add_column: None,
        check: names::cutoff_check(&plan.table),
        key_indexes: key_indexes(uniques),
    }
}

/// Attach: a unique key that already holds the partition key is adopted as
/// it is; the others get an index with the key appended, built concurrently.
fn key_indexes(uniques: &[UniqueDef]) -> Vec<KeyIndex> {
    uniques
        .iter()
        .filter(|u| u.key_appended)
        .map(|u| KeyIndex {
            name: names::key_index(&u.name),
            columns: u.columns.clone(),
            clauses: u.clauses.clone(),
        })
        .collect()
}

/// Partition names are distinct and fit PostgreSQL's limit.
fn check_names(plan: &PlanFile, layout: &[partition::Partition]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for p in layout {
        if !seen.insert(p.name.clone()) {
            return Err(plan
                .key_error(
                    "partition.naming",
                    &format!(
                        "gives two partitions the name {}; add a token that tells them apart",
                        p.name
                    ),
                )
                .into());
        }
        if p.name.len() > crate::sql::ident::MAX_IDENT_BYTES {
            return Err(plan
                .key_error(
                    "partition.naming",
                    &format!(
                        "gives the name {} which is longer than PostgreSQL's 63-byte limit",
                        p.name
                    ),
                )
                .into());
        }
    }
    Ok(())
}
