//! The table's own triggers. They fire for the application's writes on
//! whichever table holds the row, and never for the tool's: the sync and
//! attach methods keep them only on the table under the name (the tool
//! writes the other side); the move method, whose batches write both
//! tables while the application does, guards them in their WHEN clause
//! with a setting every session of the tool has (`repartition.tool`), and
//! gives them back their own definitions at the swap or abort.

use crate::blueprint::Blueprint;
use crate::catalog::TriggerInfo;
use crate::sql::{list, quote_literal, QualifiedName, Statement};

/// What a guarded trigger adds to its WHEN clause.
pub const GUARD: &str = "pg_catalog.current_setting('repartition.tool', true) IS DISTINCT FROM 'on'";

/// `CREATE TRIGGER` for `t` on `target`, and its enabled state; `guarded`
/// adds the tool's guard.
pub fn create(t: &TriggerInfo, target: &QualifiedName, guarded: bool) -> Vec<Statement> {
    let timing = if t.kind & 64 != 0 {
        "INSTEAD OF"
    } else if t.kind & 2 != 0 {
        "BEFORE"
    } else {
        "AFTER"
    };
    let mut events = Vec::new();
    if t.kind & 4 != 0 {
        events.push("INSERT".to_string());
    }
    if t.kind & 8 != 0 {
        events.push("DELETE".to_string());
    }
    if t.kind & 16 != 0 {
        events.push(if t.columns.is_empty() {
            "UPDATE".to_string()
        } else {
            format!("UPDATE OF {}", list(&t.columns))
        });
    }
    if t.kind & 32 != 0 {
        events.push("TRUNCATE".to_string());
    }
    let mut referencing = String::new();
    if let Some(o) = &t.old_table {
        referencing.push_str(&format!(" OLD TABLE AS {o}"));
    }
    if let Some(n) = &t.new_table {
        referencing.push_str(&format!(" NEW TABLE AS {n}"));
    }
    if !referencing.is_empty() {
        referencing = format!(" REFERENCING{referencing}");
    }
    let when = match (&t.when, guarded) {
        (Some(w), true) => format!(" WHEN (({w}) AND {GUARD})"),
        (Some(w), false) => format!(" WHEN ({w})"),
        (None, true) => format!(" WHEN ({GUARD})"),
        (None, false) => String::new(),
    };
    let args = list(t.args.iter().map(|a| quote_literal(a)));
    let (constraint, deferral) = match (t.constraint, t.deferrable, t.initially_deferred) {
        (false, _, _) => ("", ""),
        (true, true, true) => ("CONSTRAINT ", " DEFERRABLE INITIALLY DEFERRED"),
        (true, true, false) => ("CONSTRAINT ", " DEFERRABLE INITIALLY IMMEDIATE"),
        (true, false, _) => ("CONSTRAINT ", " NOT DEFERRABLE"),
    };
    let mut s = vec![Statement::new(
        if guarded {
            "the table's own trigger, silent for the tool's sessions"
        } else {
            "the table's own trigger, as on the original"
        },
        format!(
            "CREATE {constraint}TRIGGER {} {timing} {} ON {target}{referencing}{deferral} FOR EACH {}{when} EXECUTE FUNCTION {}({args})",
            t.name,
            events.join(" OR "),
            if t.row() { "ROW" } else { "STATEMENT" },
            t.function
        ),
    )];
    s.extend(enabled(t, target));
    s
}

/// The trigger's enabled state, where it is not the default.
pub fn enabled(t: &TriggerInfo, target: &QualifiedName) -> Option<Statement> {
    let how = match t.enabled {
        'D' => "DISABLE TRIGGER",
        'R' => "ENABLE REPLICA TRIGGER",
        'A' => "ENABLE ALWAYS TRIGGER",
        _ => return None,
    };
    Some(Statement::new(
        "the trigger's state, as on the original",
        format!("ALTER TABLE {target} {how} {}", t.name),
    ))
}

/// Every trigger created on `target`.
pub fn create_all(bp: &Blueprint, target: &QualifiedName, guarded: bool) -> Vec<Statement> {
    bp.triggers.iter().flat_map(|t| create(t, target, guarded)).collect()
}

/// Every trigger dropped from `target`.
pub fn drop_all(bp: &Blueprint, target: &QualifiedName, why: &'static str) -> Vec<Statement> {
    bp.triggers
        .iter()
        .map(|t| Statement::new(why, format!("DROP TRIGGER {} ON {target}", t.name)))
        .collect()
}

/// Every trigger disabled on `target`, where the tool is the only writer.
pub fn disable_all(bp: &Blueprint, target: &QualifiedName) -> Vec<Statement> {
    bp.triggers
        .iter()
        .map(|t| {
            Statement::new(
                "the table's own trigger rests here: only the tool writes this table now",
                format!("ALTER TABLE {target} DISABLE TRIGGER {}", t.name),
            )
        })
        .collect()
}

/// Every trigger's state as on the original again.
pub fn restore_all(bp: &Blueprint, target: &QualifiedName) -> Vec<Statement> {
    bp.triggers
        .iter()
        .map(|t| {
            enabled(t, target).unwrap_or_else(|| {
                Statement::new(
                    "the trigger's state, as on the original",
                    format!("ALTER TABLE {target} ENABLE TRIGGER {}", t.name),
                )
            })
        })
        .collect()
}
