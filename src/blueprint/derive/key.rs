//! The partition key: which column, of what kind, and by which strategy.

use crate::blueprint::Key;
use crate::catalog::TableInfo;
use crate::partition::KeyKind;
use crate::plan_file::{ListValue, Method, PlanFile, Strategy};
use crate::sql::Ident;
use anyhow::Result;

/// The key, and what refuses it short of an error in the plan itself.
pub fn key(plan: &PlanFile, info: &TableInfo) -> Result<(Key, Vec<String>)> {
    let spec = &plan.spec.partition;
    let table = &plan.table;
    let mut refusals = Vec::new();
    let key_col = info.columns.iter().find(|c| c.name.as_str() == spec.column);
    let list = spec.by == Strategy::List;
    // A string no integer column could take: `'100'` it could.
    let text_initial = match &spec.initial {
        Some(v @ ListValue::Text(t)) if v.as_int().is_none() => Some(t.as_str()),
        _ => None,
    };
    let key = match key_col {
        None if list && plan.spec.method == Method::Attach && text_initial.is_some() => {
            return Err(plan
                .key_error(
                    "partition.initial",
                    &format!(
                        "is the string `{}`, and {table} has no column `{}`; the attach method adds a missing list key column as bigint only: give an integer, or add the column in its type (its default this value) first",
                        text_initial.unwrap_or_default(),
                        spec.column
                    ),
                )
                .into())
        }
        None if list && plan.spec.method == Method::Attach => Key {
            column: Ident::new(spec.column.clone()),
            kind: KeyKind::Integer,
            type_name: "bigint".into(),
            time_zone: spec.time_zone.clone(),
            list,
            hash: None,
            list_text: false,
            made_not_null: false,
        },
        Some(c) if list && KeyKind::from_type_name(&c.type_name) != Some(KeyKind::Integer) && !listable(c) => {
            return Err(plan
                .key_error(
                    "partition.column",
                    &format!(
                        "names `{}` of type {}; a list key must be an integer, text, enum, uuid or date",
                        spec.column, c.type_name
                    ),
                )
                .into())
        }
        None if list => {
            return Err(plan
                .key_error(
                    "partition.column",
                    &format!("names `{}`, which is not a column of {table}; the attach method adds a list key column, move and sync partition on an existing one", spec.column),
                )
                .into())
        }
        None => {
            return Err(plan
                .key_error(
                    "partition.column",
                    &format!("names `{}`, which is not a column of {table}", spec.column),
                )
                .into())
        }
        Some(c) if spec.by == Strategy::Hash => {
            if c.generated {
                refusals.push(format!("the partition key {} is a generated column", c.name));
            }
            Key {
                column: c.name.clone(),
                kind: KeyKind::Integer,
                type_name: c.type_name.clone(),
                time_zone: spec.time_zone.clone(),
                list: false,
                hash: spec.modulus.map(|m| m.0 as u32),
                list_text: false,
                made_not_null: false,
            }
        }
        Some(c) => {
            let list_text = list && KeyKind::from_type_name(&c.type_name) != Some(KeyKind::Integer);
            let kind = if list_text { Some(KeyKind::Integer) } else { KeyKind::from_type_name(&c.type_name) };
            let Some(kind) = kind else {
                return Err(plan
                    .key_error(
                        "partition.column",
                        &format!("names `{}` of type {}; a range key must be timestamptz, timestamp, date, smallint, integer or bigint", spec.column, c.type_name),
                    )
                    .into());
            };
            // No partition would hold a NULL key: the run makes the
            // column NOT NULL first (`method::not_null`).
            let made_not_null = !c.not_null;
            if c.generated {
                refusals.push(format!("the partition key {} is a generated column", c.name));
            }
            Key {
                column: c.name.clone(),
                kind,
                type_name: c.type_name.clone(),
                time_zone: spec.time_zone.clone(),
                list,
                hash: spec.modulus.map(|m| m.0 as u32),
                list_text,
                made_not_null,
            }
        }
    };
    // An integer key reads a string of digits too; `eu` it cannot.
    if let (true, false, Some(v)) = (key.list, key.list_text, &spec.initial) {
        if v.as_int().is_none() {
            return Err(plan
                .key_error(
                    "partition.initial",
                    &format!(
                        "is `{}`, and {} is {}; give an integer",
                        v.text(),
                        key.column,
                        key.type_name
                    ),
                )
                .into());
        }
    }
    if key.kind == KeyKind::Integer && spec.interval.is_some() {
        return Err(plan
            .key_error(
                "partition.interval",
                &format!(
                    "is for date and time keys, and {} is {}; use partition.step",
                    key.column, key.type_name
                ),
            )
            .into());
    }
    if key.kind.is_time() && spec.step.is_some() {
        return Err(plan
            .key_error(
                "partition.step",
                &format!(
                    "is for integer keys, and {} is {}; use partition.interval",
                    key.column, key.type_name
                ),
            )
            .into());
    }
    Ok((key, refusals))
}

/// A list key of values that are not integers: strings, enums, uuid, date.
fn listable(c: &crate::catalog::ColumnInfo) -> bool {
    matches!(c.category.as_str(), "S" | "E") || c.type_name == "uuid" || c.type_name == "date"
}
