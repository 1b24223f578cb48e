//! Statement builders more than one method renders: the partitioned
//! table ([`prepare`]), the routing view ([`routing`]), the swap's tail
//! ([`swap`]), and the small pieces below. Pure: no I/O.

pub mod materialized;
pub mod prepare;
pub mod routing;
pub mod swap;
pub mod triggers;

use crate::blueprint::Blueprint;
use crate::sql::{list, quote_literal, Statement};

/// `SET LOCAL` lines every transaction of the tool starts with.
pub fn session_limits(bp: &Blueprint) -> Vec<Statement> {
    crate::exec::tx::local_limits(&bp.settings)
}

/// The statement that takes the strong locks of a DDL phase, in one round
/// trip and in the order the application takes them (outer views first).
pub fn lock_statement(why: &'static str, relations: &[String]) -> Statement {
    lock_in_mode(why, relations, "ACCESS EXCLUSIVE")
}

/// The same, in a weaker mode.
pub fn lock_in_mode(why: &'static str, relations: &[String], mode: &str) -> Statement {
    Statement::new(why, format!("LOCK TABLE {} IN {mode} MODE", list(relations)))
}

/// ` OVERRIDING SYSTEM VALUE` when a column is GENERATED ALWAYS AS
/// IDENTITY: every insert of the tool copies rows with their values, and
/// PostgreSQL accepts the clause on a table that has no identity (the
/// same statement serves the original and the partitioned table, before
/// and after the identity changes sides).
pub fn overriding(bp: &Blueprint) -> &'static str {
    if bp.has_always_identity() {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    }
}

/// The writable columns the tool may SET: not an identity ALWAYS, which
/// PostgreSQL lets no UPDATE set to a value.
pub fn settable_columns(bp: &Blueprint) -> impl Iterator<Item = &crate::blueprint::Column> {
    bp.writable_columns()
        .filter(|c| !c.identity.as_ref().is_some_and(|i| i.always))
}

/// The plain list of all columns, for SELECT lists.
pub fn all_columns(bp: &Blueprint) -> String {
    list(bp.columns.iter().map(|c| &c.name))
}

/// The writable (non-generated) columns.
pub fn writable_columns(bp: &Blueprint) -> String {
    list(bp.writable_columns().map(|c| &c.name))
}

/// `GRANT` statements that give `target` the table's privileges.
pub fn grants(bp: &Blueprint, kind: &str, target: &str) -> Vec<Statement> {
    grants_of(&bp.grants, kind, target)
}

/// `GRANT` statements that give `target` these privileges.
pub fn grants_of(list: &[crate::catalog::GrantInfo], kind: &str, target: &str) -> Vec<Statement> {
    list.iter()
        .map(|g| {
            let grantee = match &g.grantee {
                Some(r) => crate::sql::quote_ident(r),
                None => "PUBLIC".into(),
            };
            Statement::new(
                "carry over the table's privileges",
                format!(
                    "GRANT {} ON {kind} {target} TO {grantee}{}",
                    g.privilege,
                    if g.grantable { " WITH GRANT OPTION" } else { "" }
                ),
            )
        })
        .collect()
}

/// Drops the foreign keys of other tables that the plan allows to drop.
pub fn drop_incoming_fks(bp: &Blueprint, why: &'static str) -> Vec<Statement> {
    bp.incoming_fks
        .iter()
        .map(|f| Statement::new(why, format!("ALTER TABLE {} DROP CONSTRAINT {}", f.table, f.name)))
        .collect()
}

/// Restores them NOT VALID (instant); they are validated afterwards, under
/// a lock that lets writers go on.
pub fn restore_incoming_fks(bp: &Blueprint) -> Vec<Statement> {
    bp.incoming_fks
        .iter()
        .map(|f| {
            Statement::new(
                "restore a dropped incoming foreign key (validated afterwards, without blocking writers)",
                format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} {}",
                    f.table,
                    f.name,
                    swap::not_valid(&f.definition)
                ),
            )
        })
        .collect()
}

/// ` WITH (name = 'value', ...)` for stored `name=value` options, or
/// nothing.
pub fn options_clause(options: &[String]) -> String {
    if options.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = options
        .iter()
        .map(|o| match o.split_once('=') {
            Some((k, val)) => format!("{} = {}", crate::sql::quote_ident(k), quote_literal(val)),
            None => crate::sql::quote_ident(o),
        })
        .collect();
    format!(" WITH ({})", parts.join(", "))
}

/// `CREATE OR REPLACE VIEW` for a dependent view, binding its stored
/// definition to whatever relation now carries the table's name.
pub fn rebind_view(v: &crate::blueprint::ViewDef) -> Statement {
    Statement::new(
        "point the dependent view at the table's name again (it bound to the old relation by OID)",
        format!(
            "CREATE OR REPLACE VIEW {}{} AS {}",
            v.name,
            options_clause(&v.options),
            v.definition.trim_end().trim_end_matches(';')
        ),
    )
}

/// The original's row-level security on `target`: each policy, then
/// ENABLE, and FORCE where `force` (the sync method moves FORCE with the
/// name at the swap, so that its mirrors, writing as the owner, are never
/// filtered).
pub fn row_security(bp: &Blueprint, target: &crate::sql::QualifiedName, force: bool) -> Vec<Statement> {
    let rs = &bp.row_security;
    let mut s: Vec<Statement> = rs
        .policies
        .iter()
        .map(|p| {
            let command = match p.command {
                'r' => "SELECT",
                'a' => "INSERT",
                'w' => "UPDATE",
                'd' => "DELETE",
                _ => "ALL",
            };
            let roles = if p.roles.is_empty() {
                "PUBLIC".to_string()
            } else {
                p.roles
                    .iter()
                    .map(|r| r.as_deref().map_or("PUBLIC".into(), crate::sql::quote_ident))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut sql = format!(
                "CREATE POLICY {} ON {target} AS {} FOR {command} TO {roles}",
                p.name,
                if p.permissive { "PERMISSIVE" } else { "RESTRICTIVE" }
            );
            if let Some(u) = &p.using {
                sql.push_str(&format!(" USING ({u})"));
            }
            if let Some(c) = &p.check {
                sql.push_str(&format!(" WITH CHECK ({c})"));
            }
            Statement::new("a row-level security policy of the original", sql)
        })
        .collect();
    if rs.enabled {
        s.push(Statement::new(
            "row-level security as on the original",
            format!("ALTER TABLE {target} ENABLE ROW LEVEL SECURITY"),
        ));
    }
    if rs.enabled && rs.forced && force {
        s.push(force_row_security(target, true));
    }
    s
}

/// The tool's own permissive policy on `target`, when FORCE binds the
/// tool's role (`RowSecurity::tool_role`): its sessions, which set
/// `repartition.tool`, see and write every row; the application's
/// sessions, of any role, are filtered as before.
pub fn tool_policy(bp: &Blueprint, target: &crate::sql::QualifiedName) -> Vec<Statement> {
    let Some(role) = &bp.row_security.tool_role else {
        return Vec::new();
    };
    let guard = "pg_catalog.current_setting('repartition.tool', true) = 'on'";
    vec![Statement::new(
        "FORCE binds the tool's role too: its own sessions see and write every row for the migration",
        format!(
            "CREATE POLICY {} ON {target} AS PERMISSIVE FOR ALL TO {} USING ({guard}) WITH CHECK ({guard})",
            crate::blueprint::names::tool_policy(&bp.table),
            crate::sql::quote_ident(role)
        ),
    )]
}

/// The tool's policy goes from `target`.
pub fn drop_tool_policy(bp: &Blueprint, target: &crate::sql::QualifiedName) -> Vec<Statement> {
    if bp.row_security.tool_role.is_none() {
        return Vec::new();
    }
    vec![Statement::new(
        "the tool's own policy goes: the policies are the original's again",
        format!(
            "DROP POLICY IF EXISTS {} ON {target}",
            crate::blueprint::names::tool_policy(&bp.table)
        ),
    )]
}

/// FORCE ROW LEVEL SECURITY on or off.
pub fn force_row_security(target: &crate::sql::QualifiedName, on: bool) -> Statement {
    Statement::new(
        if on {
            "the policies bind the table's owner too, as on the original"
        } else {
            "the table's owner (the mirror's writer) is no longer bound by the policies; every other role still is"
        },
        format!(
            "ALTER TABLE {target} {} ROW LEVEL SECURITY",
            if on { "FORCE" } else { "NO FORCE" }
        ),
    )
}

/// The publications that list the table pass from `from` to `to`, which
/// now carries the name: the same row filter and column list, published
/// through the partition root so that subscribers see the table's name
/// (PostgreSQL decodes each change with the catalog of its moment, so the
/// swap's own transaction is published on both sides of the change as the
/// application meant it).
pub fn hand_publications(
    bp: &Blueprint,
    from: &crate::sql::QualifiedName,
    to: &crate::sql::QualifiedName,
) -> Vec<Statement> {
    let mut s = Vec::new();
    for p in &bp.publications {
        s.push(Statement::new(
            "the table that leaves the name leaves the publication",
            format!("ALTER PUBLICATION {} DROP TABLE {from}", p.name),
        ));
        let columns = if p.columns.is_empty() {
            String::new()
        } else {
            format!(" ({})", list(&p.columns))
        };
        let filter = p
            .row_filter
            .as_ref()
            .map(|f| format!(" WHERE ({f})"))
            .unwrap_or_default();
        s.push(Statement::new(
            "the table under the name is published, as the original was",
            format!("ALTER PUBLICATION {} ADD TABLE {to}{columns}{filter}", p.name),
        ));
        if !p.via_root {
            s.push(Statement::new(
                "a partition's changes are published under the partitioned table's name, which subscribers know",
                format!("ALTER PUBLICATION {} SET (publish_via_partition_root = true)", p.name),
            ));
        }
    }
    s
}
