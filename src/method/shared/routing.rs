//! The routing view, shared by the move method, its abort and the attach
//! method's split: a `UNION ALL` view under the table's name over the
//! partitioned table and the table being emptied, with routing so that the
//! application's INSERT (with RETURNING, and COPY), UPDATE and DELETE keep
//! working while rows move underneath; and the hand-over that ends it.

use super::{all_columns, grants, lock_statement, overriding, rebind_view, settable_columns, writable_columns};
use crate::blueprint::Blueprint;
use crate::sql::{list, QualifiedName, Statement};

/// Where the view sends new rows: the shadow table while migrating, the
/// original table while an abort moves rows back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertTarget {
    Shadow,
    Original,
}

/// The view goes live under the table's name: the view, its routing into
/// the partitioned table, and the dependent views rebound to it.
pub fn view_goes_live(bp: &Blueprint) -> Vec<Statement> {
    let mut s = view_statements(bp);
    s.extend(routing_statements(bp, InsertTarget::Shadow));
    s.extend(super::triggers::on_view(bp));
    s.extend(bp.dependent_views.iter().map(rebind_view));
    s
}

/// The view and everything on it except the routing.
pub fn view_statements(bp: &Blueprint) -> Vec<Statement> {
    let mut s = Vec::new();
    let cols = all_columns(bp);
    // Under row-level security the view reads both tables as the role
    // that queries it, so that their policies apply to it.
    let invoker = if bp.row_security.enabled {
        " WITH (security_invoker = true)"
    } else {
        ""
    };
    // PostgreSQL runs FOR UPDATE/SHARE on a UNION ALL view without
    // locking a row. Joined to a one-row grouped subquery, which the
    // planner keeps apart, the view makes every locking read of it fail
    // ("FOR UPDATE is not allowed with GROUP BY clause") rather than lock
    // nothing.
    s.push(Statement::new(
        "one view over both tables under the table's name; a row is always in exactly one of them, and a locking read fails rather than lock nothing",
        format!(
            "CREATE VIEW {}{invoker} AS SELECT {cols} FROM (SELECT {cols} FROM {} UNION ALL SELECT {cols} FROM ONLY {}) AS both_tables, \
             (SELECT FROM (SELECT) AS one GROUP BY ()) AS no_row_locks",
            bp.table, bp.shadow, bp.old
        ),
    ));
    s.push(Statement::new(
        "the table's owner owns the view",
        format!(
            "ALTER VIEW {} OWNER TO {}",
            bp.table,
            crate::sql::quote_ident(&bp.owner)
        ),
    ));
    for c in &bp.columns {
        if let (Some(d), true) = (&c.default, c.writable) {
            s.push(Statement::new(
                "column defaults on the view, so that an INSERT that omits a column gets what the table gave",
                format!("ALTER VIEW {} ALTER COLUMN {} SET DEFAULT {d}", bp.table, c.name),
            ));
        }
    }
    s.extend(grants(bp, "TABLE", &bp.table.to_string()));
    s.extend(identity_usage(bp, false));
    s.extend(super::swap::keep_comment(bp, "VIEW"));
    s
}

/// The view's default for an identity column calls nextval of its
/// sequence, which checks the caller's privilege where the identity did
/// not: every role that may insert into the table may use the sequence
/// while the view stands (`grant`), and no longer once it goes (`revoke`).
fn identity_usage(bp: &Blueprint, revoke: bool) -> Vec<Statement> {
    let mut s = Vec::new();
    for c in &bp.columns {
        let Some(i) = &c.identity else { continue };
        for g in &i.grant {
            let grantee = match g {
                Some(r) => crate::sql::quote_ident(r),
                None => "PUBLIC".into(),
            };
            s.push(if revoke {
                Statement::new(
                    "the view's default is gone: the sequence's privileges as they were",
                    format!("REVOKE USAGE ON SEQUENCE {} FROM {grantee}", i.sequence),
                )
            } else {
                Statement::new(
                    "the view's default draws from the identity's sequence: whoever may insert may use it",
                    format!("GRANT USAGE ON SEQUENCE {} TO {grantee}", i.sequence),
                )
            });
        }
    }
    s
}

/// INSERT rule and INSTEAD OF triggers. Re-rendered with
/// `InsertTarget::Original` when an abort turns new rows back.
pub fn routing_statements(bp: &Blueprint, target: InsertTarget) -> Vec<Statement> {
    let r = &bp.routing;
    let owner = crate::sql::quote_ident(&bp.owner);
    let mut s = insert_routing(bp, target);
    s.push(Statement::new(
        "UPDATE through the view: find the row in whichever table holds it now",
        function(&r.update_function, &update_body(bp)),
    ));
    s.push(Statement::new(
        "DELETE through the view: the same search, deleting",
        function(&r.delete_function, &delete_body(bp)),
    ));
    for f in [&r.update_function, &r.delete_function] {
        s.push(Statement::new(
            "the table's owner owns the routing",
            format!("ALTER FUNCTION {f}() OWNER TO {owner}"),
        ));
    }
    s.push(Statement::new(
        "INSERT rows through COPY reach the same table as INSERT statements",
        format!(
            "CREATE TRIGGER {} INSTEAD OF INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {}()",
            r.insert_trigger, bp.table, r.insert_function
        ),
    ));
    s.push(Statement::new(
        "route UPDATE",
        format!(
            "CREATE TRIGGER {} INSTEAD OF UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}()",
            r.update_trigger, bp.table, r.update_function
        ),
    ));
    s.push(Statement::new(
        "route DELETE",
        format!(
            "CREATE TRIGGER {} INSTEAD OF DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()",
            r.delete_trigger, bp.table, r.delete_function
        ),
    ));
    s
}

/// The INSERT rule (set-based, supports RETURNING) and the INSTEAD OF
/// INSERT function (used by COPY, which does not apply rules).
pub fn insert_routing(bp: &Blueprint, target: InsertTarget) -> Vec<Statement> {
    let r = &bp.routing;
    let dest_alias = match target {
        InsertTarget::Shadow => &bp.shadow,
        InsertTarget::Original => &bp.old,
    };
    let dest = dest_alias.to_string();
    let wcols = writable_columns(bp);
    let new_values = list(bp.writable_columns().map(|c| format!("NEW.{}", c.name)));
    let returning = list(bp.columns.iter().map(|c| format!("{dest_alias}.{}", c.name)));
    let into = list(bp.columns.iter().map(|c| format!("NEW.{}", c.name)));
    let owner = crate::sql::quote_ident(&bp.owner);
    let mut s = Vec::new();
    // A split's abort sends back only the rows of the first partition's
    // range: the others belong to the partitions after the cutoff, which
    // stay. A rule cannot choose (a conditional rule returns nothing), so
    // the trigger below does.
    let split_back = match (&bp.split, target) {
        (Some(d), InsertTarget::Original) => Some(d),
        _ => None,
    };
    if split_back.is_some() {
        s.push(Statement::new(
            "INSERT through the view goes by the trigger below from now on",
            format!("DROP RULE IF EXISTS {} ON {}", r.insert_rule, bp.table),
        ));
    }
    // A rule's action runs as the view's owner, whom the policies do not
    // bind: under row-level security INSERT goes through the trigger
    // below, which runs as the application's role and returns the row.
    if !bp.row_security.enabled && split_back.is_none() {
        s.push(Statement::new(
            "INSERT through the view, with RETURNING",
            format!(
                "CREATE OR REPLACE RULE {} AS ON INSERT TO {} DO INSTEAD INSERT INTO {dest} ({wcols}){o} VALUES ({new_values}) RETURNING {returning}",
                r.insert_rule, bp.table, o = overriding(bp)
            ),
        ));
    }
    let o = overriding(bp);
    let (mark, unmark) = marks(bp);
    let body = match split_back {
        Some(d) => {
            let shadow = &bp.shadow;
            let back = list(bp.columns.iter().map(|c| format!("{shadow}.{}", c.name)));
            format!(
                "BEGIN\n{mark}  IF NEW.{k} < {cutoff}::{ty} THEN\n    INSERT INTO {dest} ({wcols}){o} VALUES ({new_values}) RETURNING {returning} INTO {into};\n  ELSE\n    INSERT INTO {shadow} ({wcols}){o} VALUES ({new_values}) RETURNING {back} INTO {into};\n  END IF;\n{unmark}  RETURN NEW;\nEND",
                k = bp.key.column,
                cutoff = crate::sql::quote_literal(&d.cutoff),
                ty = bp.key.type_name,
            )
        }
        None => format!(
            "BEGIN\n{mark}  INSERT INTO {dest} ({wcols}){o} VALUES ({new_values}) RETURNING {returning} INTO {into};\n{unmark}  RETURN NEW;\nEND"
        ),
    };
    s.extend([
        Statement::new("INSERT for COPY into the view", function(&r.insert_function, &body)),
        Statement::new(
            "the table's owner owns the routing",
            format!("ALTER FUNCTION {}() OWNER TO {owner}", r.insert_function),
        ),
    ]);
    s
}

/// What the routing functions set and clear around their writes, when some
/// trigger must tell them from others (see `triggers`); empty otherwise.
fn marks(bp: &Blueprint) -> (String, String) {
    if super::triggers::routing_marks(bp) {
        (
            format!("  {}\n", super::triggers::mark(super::triggers::ROUTED)),
            format!("  {}\n", super::triggers::unmark(super::triggers::ROUTED)),
        )
    } else {
        (String::new(), String::new())
    }
}

fn function(name: &QualifiedName, body: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS {}",
        dollar_quote(body)
    )
}

/// Dollar-quotes a function body with a tag that does not occur in it.
fn dollar_quote(body: &str) -> String {
    let mut tag = String::from("$routing$");
    let mut n = 0;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$routing{n}$");
    }
    format!("{tag}\n{body}\n{tag}")
}

/// SET list of an UPDATE: each column takes the statement's new value only
/// where the statement changed it, and keeps the row's current value
/// otherwise, so that concurrent updates of different columns of one row
/// both survive.
fn merge_set(bp: &Blueprint) -> String {
    list(settable_columns(bp).map(|c| {
        let changed = if c.has_equality {
            format!("NEW.{n} IS DISTINCT FROM OLD.{n}", n = c.name)
        } else {
            format!("NEW.{n}::text IS DISTINCT FROM OLD.{n}::text", n = c.name)
        };
        format!("{n} = CASE WHEN {changed} THEN NEW.{n} ELSE t.{n} END", n = c.name)
    }))
}

/// The searches for the row of OLD, in an order that finds it whichever way
/// rows are moving: original, partitioned (pruned by key, then by identity
/// alone in case a concurrent update changed the key), original again.
fn searches(bp: &Blueprint) -> Vec<(String, String)> {
    let ident = |alias: &str| {
        bp.row_identity
            .iter()
            .map(|c| format!("{alias}.{c} = OLD.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let by_id = ident("t");
    let with_key = format!("{by_id} AND t.{k} = OLD.{k}", k = bp.key.column);
    let mut v = vec![(format!("ONLY {}", bp.old), by_id.clone())];
    v.push((bp.shadow.to_string(), with_key));
    if !bp.row_identity.contains(&bp.key.column) {
        v.push((bp.shadow.to_string(), by_id.clone()));
    }
    v.push((format!("ONLY {}", bp.old), by_id));
    v
}

fn update_body(bp: &Blueprint) -> String {
    let set = merge_set(bp);
    let mut body = key_check(bp);
    // An identity ALWAYS column is left out of the SET list; a statement
    // that changes it fails as it would on the table.
    for c in bp.writable_columns() {
        if c.identity.as_ref().is_some_and(|i| i.always) {
            body.push_str(&format!(
                "  IF NEW.{n} IS DISTINCT FROM OLD.{n} THEN\n    RAISE EXCEPTION USING ERRCODE = 'generated_always', MESSAGE = {m};\n  END IF;\n",
                n = c.name,
                m = crate::sql::quote_literal(&format!("column {} can only be updated to DEFAULT", c.name))
            ));
        }
    }
    let (mark, unmark) = marks(bp);
    body.push_str(&mark);
    let then = unmark.trim_start();
    for (rel, cond) in searches(bp) {
        body.push_str(&format!(
            "  UPDATE {rel} AS t SET {set} WHERE {cond};\n  IF FOUND THEN {}RETURN NEW; END IF;\n",
            then.replace('\n', " ")
        ));
    }
    body.push_str(&format!("{unmark}  RETURN NULL;\nEND"));
    body
}

/// A new key no partition takes fails the UPDATE at once, as PostgreSQL
/// fails it on a partitioned table, even for a row the original still
/// holds (which would take any key, and stop the move later). The
/// partitions' constraints are read when the key changes, so partitions
/// `maintain` makes meanwhile count.
fn key_check(bp: &Blueprint) -> String {
    let k = &bp.key.column;
    format!(
        "DECLARE\n  bounds text;\n  fits boolean;\nBEGIN\n\
         \x20 IF NEW.{k} IS DISTINCT FROM OLD.{k} THEN\n\
         \x20   SELECT pg_catalog.string_agg('(' || pg_catalog.pg_get_partition_constraintdef(i.inhrelid) || ')', ' OR ') INTO bounds\n\
         \x20     FROM pg_catalog.pg_inherits i WHERE i.inhparent = {shadow}::regclass;\n\
         \x20   EXECUTE 'SELECT coalesce(' || coalesce(bounds, 'false') || ', false) FROM (SELECT $1 AS ' || {col} || ') s' INTO fits USING NEW.{k};\n\
         \x20   IF NOT fits THEN\n\
         \x20     RAISE EXCEPTION 'no partition of relation \"%\" found for row', {name} USING ERRCODE = 'check_violation',\n\
         \x20       DETAIL = pg_catalog.format('Partition key of the failing row contains (%s) = (%s).', {col}, NEW.{k});\n\
         \x20   END IF;\n\
         \x20 END IF;\n",
        shadow = crate::sql::quote_literal(&bp.shadow.to_string()),
        col = crate::sql::quote_literal(&k.to_string()),
        name = crate::sql::quote_literal(bp.table.name.as_str()),
    )
}

fn delete_body(bp: &Blueprint) -> String {
    let (mark, unmark) = marks(bp);
    let mut body = format!("BEGIN\n{mark}");
    let then = unmark.trim_start();
    for (rel, cond) in searches(bp) {
        body.push_str(&format!(
            "  DELETE FROM {rel} AS t WHERE {cond};\n  IF FOUND THEN {}RETURN OLD; END IF;\n",
            then.replace('\n', " ")
        ));
    }
    body.push_str(&format!("{unmark}  RETURN NULL;\nEND"));
    body
}

/// The swap's locks: dependent views, the view, the tables behind it.
pub fn view_locks(bp: &Blueprint) -> Statement {
    let mut locks: Vec<String> = bp.dependent_views.iter().map(|v| v.name.to_string()).collect();
    locks.push(bp.table.to_string());
    locks.push(bp.shadow.to_string());
    locks.push(bp.old.to_string());
    lock_statement(
        "take every lock of the swap at once, in the order the application takes them: dependent views, the view, then the tables behind it",
        &locks,
    )
}

/// The rows an UPDATE put behind the mover's cursor, found through the
/// row-identity index rather than by reading every emptied page. The
/// original is not vacuumed (it is dropped soon), so its statistics still
/// count every row it had: the statement is one scan of the index, with
/// nothing for the planner to estimate by probing it, and no JIT compiling
/// for the rows the statistics promise.
pub fn stragglers(bp: &Blueprint) -> Vec<Statement> {
    let w = writable_columns(bp);
    // Row-identity columns are NOT NULL: this matches every row, through
    // the index whose first column it is.
    let every_row = match bp.row_identity.first() {
        Some(c) => format!("{c} IS NOT NULL"),
        None => "true".into(),
    };
    vec![
        Statement::new(
            "find the last stragglers through the row-identity index, not by reading every emptied page",
            "SET LOCAL enable_seqscan = off",
        ),
        Statement::new(
            "the statistics of the emptied original promise every row it had: nothing to compile for",
            "SET LOCAL jit = off",
        ),
        Statement::new(
            "move the rows that an UPDATE put behind the mover's cursor",
            format!(
                "WITH moved AS (DELETE FROM ONLY {old} WHERE {every_row} RETURNING {w}) \
                 INSERT INTO {shadow} ({w}){o} SELECT {w} FROM moved",
                old = bp.old,
                shadow = bp.shadow,
                o = overriding(bp)
            ),
        ),
    ]
}

/// The routing view steps aside, `heir` takes the table's name, dependent
/// views follow it, and the view and its routing go.
pub fn hand_name_to(bp: &Blueprint, heir: &crate::sql::QualifiedName, why: &'static str) -> Vec<Statement> {
    let r = &bp.routing;
    let mut s = vec![
        Statement::new(
            "the view steps aside (dependent views still bind to it)",
            format!("ALTER VIEW {} RENAME TO {}", bp.table, bp.retired_view.name),
        ),
        Statement::new(why, format!("ALTER TABLE {heir} RENAME TO {}", bp.table.name)),
    ];
    for v in &bp.dependent_views {
        s.push(rebind_view(v));
    }
    s.push(Statement::new(
        "the view and its rule and triggers go",
        format!("DROP VIEW {}", bp.retired_view),
    ));
    s.extend(identity_usage(bp, true));
    let marker = super::triggers::marker_function(bp)
        .map(|f| format!(", {f}()"))
        .unwrap_or_default();
    s.push(Statement::new(
        "the routing functions go",
        format!(
            "DROP FUNCTION {}(), {}(), {}(){marker}",
            r.insert_function, r.update_function, r.delete_function
        ),
    ));
    s
}
