//! The table's own triggers. They fire for the application's writes on
//! whichever table holds the row, and never for the tool's: the sync and
//! attach methods keep them only on the table under the name (the tool
//! writes the other side); the move method and the split, whose batches
//! write both tables while the application does, guard them in their WHEN
//! clause with a setting every session of the tool has (`repartition.tool`),
//! and give them back their own definitions at the swap or abort.
//!
//! While the routing view stands under the table's name, the application's
//! UPDATE and DELETE (and COPY, and INSERT under row-level security) reach
//! the tables one row at a time through the view's INSTEAD OF triggers,
//! each row's statement setting every column. So that a trigger still fires
//! as often as the application's statements say:
//! - a statement trigger's INSERT, UPDATE and DELETE go on the view, which
//!   fires it once per statement; its copies on the tables stay silent for
//!   what the routing writes (`ROUTED`) and fire for what reaches them
//!   otherwise: the view's INSERT rule, foreign-key cascades, TRUNCATE;
//! - a row trigger on `UPDATE OF` columns fires for a routed row only when
//!   the application's statement named one of them, which a statement
//!   trigger on the view with the same columns records for its depth.
//!
//! The marks are per trigger depth, so that statements nested in triggers
//! keep their own; a rolled-back statement takes its marks with it.

use crate::blueprint::Blueprint;
use crate::catalog::TriggerInfo;
use crate::sql::{list, quote_literal, QualifiedName, Statement};

/// What a guarded trigger adds to its WHEN clause.
pub const GUARD: &str = "pg_catalog.current_setting('repartition.tool', true) IS DISTINCT FROM 'on'";

/// The mark the routing functions set around what they write.
pub const ROUTED: &str = "repartition.routed";

const INSERT: i16 = 4;
const DELETE: i16 = 8;
const UPDATE: i16 = 16;
const TRUNCATE: i16 = 32;
/// Row, BEFORE and INSTEAD OF: what is not an event.
const TIMING: i16 = 1 | 2 | 64;

/// Which table behind the routing view a copy goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The table being emptied, which foreign-key cascades and TRUNCATE
    /// reach as they reached the original.
    Old,
    /// The partitioned table.
    Shadow,
}

/// Sets `flag`'s mark for the current trigger depth (PL/pgSQL).
pub fn mark(flag: &str) -> String {
    mark_by(&quote_literal(flag))
}

/// Clears `flag`'s mark for the current trigger depth (PL/pgSQL).
pub fn unmark(flag: &str) -> String {
    unmark_by(&quote_literal(flag))
}

/// `mark` with the flag's name as an SQL expression `f`.
fn mark_by(f: &str) -> String {
    format!(
        "PERFORM pg_catalog.set_config({f}, coalesce(nullif(pg_catalog.current_setting({f}, true), ''), ',') || pg_catalog.pg_trigger_depth() || ',', true);"
    )
}

fn unmark_by(f: &str) -> String {
    format!(
        "PERFORM pg_catalog.set_config({f}, pg_catalog.replace(pg_catalog.current_setting({f}, true), ',' || pg_catalog.pg_trigger_depth() || ',', ','), true);"
    )
}

/// Whether `flag` is marked at the depth a trigger's WHEN is evaluated at:
/// that of the statement that fires it.
fn marked(flag: &str) -> String {
    let f = quote_literal(flag);
    format!("coalesce(pg_catalog.strpos(pg_catalog.current_setting({f}, true), ',' || pg_catalog.pg_trigger_depth() || ','), 0) > 0")
}

/// The mark of the `i`th trigger's `UPDATE OF` columns.
fn columns_flag(i: usize) -> String {
    format!("repartition.update_of_{i}")
}

/// A statement trigger with transition tables cannot go on a view, so it
/// stays on the tables alone (only INSERT ones are accepted under the view).
fn transition(t: &TriggerInfo) -> bool {
    t.old_table.is_some() || t.new_table.is_some()
}

/// Whether the routing functions mark what they write: some trigger tells
/// routed writes from others.
pub fn routing_marks(bp: &Blueprint) -> bool {
    bp.triggers.iter().any(|t| {
        if t.row() {
            !t.columns.is_empty()
        } else {
            !transition(t) && t.kind & (INSERT | UPDATE | DELETE) != 0
        }
    })
}

/// The function of the view's triggers that mark `UPDATE OF` columns, when
/// some row trigger has them.
pub fn marker_function(bp: &Blueprint) -> Option<QualifiedName> {
    bp.triggers
        .iter()
        .any(|t| t.row() && !t.columns.is_empty())
        .then(|| bp.table.sibling(bp.table.name.derive("__mark")))
}

/// A trigger as it goes somewhere: its definition with other events or
/// another name, and what its WHEN adds.
struct Copy {
    t: TriggerInfo,
    extra: Vec<String>,
}

fn with_events(t: &TriggerInfo, events: i16) -> TriggerInfo {
    let mut c = t.clone();
    c.kind = (t.kind & TIMING) | events;
    if events & UPDATE == 0 {
        c.columns.clear();
    }
    c
}

/// The copies of the table's triggers on one side of the routing view.
fn table_copies(bp: &Blueprint, side: Side) -> Vec<Copy> {
    let marks = routing_marks(bp);
    let mut v = Vec::new();
    for (i, t) in bp.triggers.iter().enumerate() {
        if t.row() {
            if t.columns.is_empty() {
                v.push(Copy {
                    t: t.clone(),
                    extra: vec![GUARD.into()],
                });
                continue;
            }
            // `UPDATE OF` in a copy of its own, since a WHEN cannot tell
            // events apart; its name sorts right after the trigger's.
            let others = t.kind & (INSERT | DELETE | TRUNCATE);
            if others != 0 {
                v.push(Copy {
                    t: with_events(t, others),
                    extra: vec![GUARD.into()],
                });
            }
            let mut of = with_events(t, UPDATE);
            of.name = t.name.derive("__of");
            v.push(Copy {
                t: of,
                extra: vec![
                    GUARD.into(),
                    format!("(NOT {} OR {})", marked(ROUTED), marked(&columns_flag(i))),
                ],
            });
            continue;
        }
        let events = match side {
            Side::Old => t.kind & (INSERT | UPDATE | DELETE | TRUNCATE),
            Side::Shadow => t.kind & INSERT,
        };
        if events == 0 {
            continue;
        }
        let mut extra = vec![GUARD.to_string()];
        if marks && !transition(t) && events & (INSERT | UPDATE | DELETE) != 0 {
            extra.push(format!("NOT {}", marked(ROUTED)));
        }
        v.push(Copy {
            t: with_events(t, events),
            extra,
        });
    }
    v
}

/// The table's triggers on `target`, one side of the routing view, silent
/// for the tool's sessions and for what the view passes on row by row
/// where they must fire once per statement.
pub fn on_tables(bp: &Blueprint, target: &QualifiedName, side: Side) -> Vec<Statement> {
    table_copies(bp, side)
        .iter()
        .flat_map(|c| create_with(&c.t, target, &c.extra))
        .collect()
}

/// The copies `on_tables` made on `target` go.
pub fn off_tables(bp: &Blueprint, target: &QualifiedName, side: Side) -> Vec<Statement> {
    table_copies(bp, side)
        .iter()
        .map(|c| {
            Statement::new(
                "the guarded copy of a trigger goes",
                format!("DROP TRIGGER {} ON {target}", c.t.name),
            )
        })
        .collect()
}

/// The triggers on the routing view itself: statement triggers, fired once
/// per statement of the application's, and the marks of `UPDATE OF`
/// columns. A view's trigger cannot rest or be a replica's, so a disabled
/// or replica-only trigger has none. They go with the view.
pub fn on_view(bp: &Blueprint) -> Vec<Statement> {
    let mut s = Vec::new();
    if let Some(f) = marker_function(bp) {
        s.push(Statement::new(
            "marks, for the depth of the statement, that it names some UPDATE OF columns of a trigger",
            format!(
                "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $mark$\nBEGIN\n  IF TG_WHEN = 'BEFORE' THEN\n    {}\n  ELSE\n    {}\n  END IF;\n  RETURN NULL;\nEND\n$mark$",
                mark_by("TG_ARGV[0]"),
                unmark_by("TG_ARGV[0]"),
            ),
        ));
        s.push(Statement::new(
            "the table's owner owns the routing",
            format!("ALTER FUNCTION {f}() OWNER TO {}", crate::sql::quote_ident(&bp.owner)),
        ));
    }
    for (i, t) in bp.triggers.iter().enumerate() {
        if !matches!(t.enabled, 'O' | 'A') {
            continue;
        }
        if t.row() {
            let Some(f) = (!t.columns.is_empty()).then(|| marker_function(bp)).flatten() else {
                continue;
            };
            for (timing, suffix) in [("BEFORE", "__of_on"), ("AFTER", "__of_off")] {
                s.push(Statement::new(
                    "the view records, for this statement, that it names the trigger's UPDATE OF columns",
                    format!(
                        "CREATE TRIGGER {} {timing} UPDATE OF {} ON {} FOR EACH STATEMENT EXECUTE FUNCTION {f}({})",
                        t.name.derive(suffix),
                        list(&t.columns),
                        bp.table,
                        quote_literal(&columns_flag(i))
                    ),
                ));
            }
            continue;
        }
        let events = t.kind & (INSERT | UPDATE | DELETE);
        if events == 0 || transition(t) {
            continue;
        }
        let mut c = with_events(t, events);
        c.enabled = 'O';
        s.extend(create_with(&c, &bp.table, &[GUARD.into()]).into_iter().map(|mut st| {
            st.why = "the table's own statement trigger on the view, fired once per statement of the application's";
            st
        }));
    }
    s
}

/// `CREATE TRIGGER` for `t` on `target` as on the original, and its
/// enabled state.
pub fn create(t: &TriggerInfo, target: &QualifiedName) -> Vec<Statement> {
    create_with(t, target, &[])
}

/// `create`, with `extra` conditions added to the WHEN clause.
fn create_with(t: &TriggerInfo, target: &QualifiedName, extra: &[String]) -> Vec<Statement> {
    let guarded = !extra.is_empty();
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
    let conditions: Vec<String> = t
        .when
        .iter()
        .map(|w| format!("({w})"))
        .chain(extra.iter().cloned())
        .collect();
    let when = match conditions.as_slice() {
        [] => String::new(),
        [one] if t.when.is_some() => format!(" WHEN {one}"),
        all => format!(" WHEN ({})", all.join(" AND ")),
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

/// Every trigger created on `target` as on the original.
pub fn create_all(bp: &Blueprint, target: &QualifiedName) -> Vec<Statement> {
    bp.triggers.iter().flat_map(|t| create(t, target)).collect()
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
