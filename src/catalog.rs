//! Reads what the migration needs to know about a table from the live
//! catalog. Read-only: `plan` runs exactly this and changes nothing.

use crate::sql::{Ident, QualifiedName};
use anyhow::{Context, Result};
use tokio_postgres::Client;

#[derive(Clone, Debug)]
pub struct TableInfo {
    pub oid: u32,
    pub name: QualifiedName,
    pub relkind: String,
    pub persistence: String,
    pub is_partition: bool,
    pub has_inheritance: bool,
    pub row_security: bool,
    /// FORCE ROW LEVEL SECURITY: the policies bind the owner too.
    pub force_row_security: bool,
    pub owner: String,
    pub comment: Option<String>,
    pub estimated_rows: f64,
    pub bytes: i64,
    /// Storage parameters (`fillfactor=70`, `autovacuum_enabled=false`).
    pub reloptions: Vec<String>,
    /// Its tablespace, when not the database's default.
    pub tablespace: Option<String>,
    pub columns: Vec<ColumnInfo>,
    pub constraints: Vec<ConstraintInfo>,
    pub indexes: Vec<IndexInfo>,
    pub incoming_fks: Vec<IncomingFkInfo>,
    pub dependents: Vec<DependentInfo>,
    /// The materialized views that read the table.
    pub materialized: Vec<MatViewInfo>,
    pub triggers: Vec<String>,
    /// The user triggers, as the partitioned table takes them.
    pub trigger_defs: Vec<TriggerInfo>,
    pub rules: Vec<String>,
    pub policies: Vec<PolicyInfo>,
    pub publications: Vec<PublicationInfo>,
    pub grants: Vec<GrantInfo>,
    pub sequences: Vec<SequenceInfo>,
    /// Identity columns and their sequences.
    pub identities: Vec<IdentityInfo>,
}

#[derive(Clone, Debug)]
pub struct ColumnInfo {
    pub name: Ident,
    pub type_name: String,
    /// The type without its modifier.
    pub base_type: String,
    pub not_null: bool,
    pub default: Option<String>,
    pub generated: bool,
    pub identity: bool,
    /// Whether `=` resolves for the type (json, xml, point... have none).
    pub has_equality: bool,
    /// `pg_type.typcategory`: S string, E enum, U user (uuid), D date and
    /// time, N numeric...
    pub category: String,
}

#[derive(Clone, Debug)]
pub struct ConstraintInfo {
    pub name: Ident,
    /// p, u, f, c, x
    pub kind: char,
    pub columns: Vec<Ident>,
    pub definition: String,
    pub index: Option<Ident>,
    pub deferrable: bool,
    pub deferred: bool,
    pub referenced: Option<QualifiedName>,
    pub referenced_columns: Vec<Ident>,
    /// The clauses of a primary or unique key's index beyond its columns.
    pub clauses: IndexClauses,
}

/// What a key's index has beyond its columns.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexClauses {
    pub include: Vec<Ident>,
    pub nulls_not_distinct: bool,
    /// Storage parameters (`fillfactor=70`).
    pub options: Vec<String>,
    pub tablespace: Option<String>,
}

#[derive(Clone, Debug)]
pub struct IndexInfo {
    pub name: Ident,
    /// `pg_get_indexdef` after `... ON table USING `: the method, keys,
    /// INCLUDE, WITH and WHERE parts, which apply unchanged to another table.
    pub tail: Option<String>,
    pub unique: bool,
    pub valid: bool,
    pub has_expressions: bool,
    pub has_predicate: bool,
    /// The WHERE clause of a partial index, as PostgreSQL prints it.
    pub predicate: Option<String>,
    /// Its tablespace, when not the database's default (`pg_get_indexdef`
    /// leaves it out).
    pub tablespace: Option<String>,
    pub columns: Vec<Ident>,
    /// Set when the index backs a constraint (those are handled as
    /// constraints).
    pub constraint: Option<Ident>,
}

/// A user trigger, in the parts `CREATE TRIGGER` takes, so that it can be
/// created on another table (and guarded there).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TriggerInfo {
    pub name: Ident,
    /// `pg_trigger.tgtype`: row 1, before 2, insert 4, delete 8, update 16,
    /// truncate 32, instead 64.
    pub kind: i16,
    /// O (origin, the default), D (disabled), R (replica), A (always).
    pub enabled: char,
    /// Columns of `UPDATE OF`.
    pub columns: Vec<Ident>,
    /// The WHEN condition, as `pg_get_triggerdef` prints it.
    pub when: Option<String>,
    pub old_table: Option<Ident>,
    pub new_table: Option<Ident>,
    pub function: QualifiedName,
    pub args: Vec<String>,
    /// A constraint trigger (`CREATE CONSTRAINT TRIGGER`), and its timing.
    pub constraint: bool,
    #[serde(default)]
    pub deferrable: bool,
    #[serde(default)]
    pub initially_deferred: bool,
}

impl TriggerInfo {
    pub fn row(&self) -> bool {
        self.kind & 1 != 0
    }
}

/// A materialized view that reads the table, with what it carries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MatViewInfo {
    pub name: QualifiedName,
    pub definition: String,
    pub owner: String,
    pub populated: bool,
    pub comment: Option<String>,
    /// Each index: its name, whether it is unique, and its definition
    /// after `USING`.
    pub indexes: Vec<(Ident, bool, String)>,
    pub grants: Vec<GrantInfo>,
    /// Views and materialized views that read it in turn.
    pub readers: Vec<String>,
}

/// A row-level security policy, as `pg_policy` holds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyInfo {
    pub name: Ident,
    pub permissive: bool,
    /// r (SELECT), a (INSERT), w (UPDATE), d (DELETE), * (ALL)
    pub command: char,
    /// None for PUBLIC.
    pub roles: Vec<Option<String>>,
    pub using: Option<String>,
    pub check: Option<String>,
}

#[derive(Clone, Debug)]
pub struct IncomingFkInfo {
    pub name: Ident,
    pub table: QualifiedName,
    pub definition: String,
}

#[derive(Clone, Debug)]
pub struct DependentInfo {
    pub name: QualifiedName,
    /// v (view), m (materialized view), f (function)
    pub kind: char,
    pub definition: String,
    pub options: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GrantInfo {
    /// None for PUBLIC.
    pub grantee: Option<String>,
    pub privilege: String,
    pub grantable: bool,
}

#[derive(Clone, Debug)]
pub struct SequenceInfo {
    pub name: QualifiedName,
    pub column: Ident,
    pub owned: bool,
}

/// An identity column: its kind and its sequence's options, which the
/// partitioned table's identity takes over at the swap.
#[derive(Clone, Debug)]
pub struct IdentityInfo {
    pub column: Ident,
    /// GENERATED ALWAYS (else BY DEFAULT).
    pub always: bool,
    pub sequence: QualifiedName,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub cache: i64,
    pub cycle: bool,
    /// Roles holding USAGE on the sequence (None: PUBLIC), besides its owner.
    pub usage: Vec<Option<String>>,
}

/// Facts about the server and session that planning needs.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub version_num: i32,
    pub now: chrono::DateTime<chrono::Utc>,
    pub deadlock_timeout_ms: i64,
    pub block_size: i64,
}

pub async fn server_info(client: &Client) -> Result<ServerInfo> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, now(), \
                    (SELECT setting::bigint * CASE unit WHEN 's' THEN 1000 ELSE 1 END \
                       FROM pg_settings WHERE name = 'deadlock_timeout'), \
                    current_setting('block_size')::bigint",
            &[],
        )
        .await
        .context("cannot read the server's settings")?;
    Ok(ServerInfo {
        version_num: row.get(0),
        now: row.get(1),
        deadlock_timeout_ms: row.get(2),
        block_size: row.get(3),
    })
}

/// The oid of a relation by name, if it exists.
pub async fn relation_oid(client: &Client, name: &QualifiedName) -> Result<Option<u32>> {
    let row = client
        .query_one("SELECT to_regclass($1)::oid", &[&name.to_regclass_text()])
        .await?;
    Ok(row.get(0))
}

/// Whether a function with this name (any arguments) exists.
pub async fn function_exists(client: &Client, name: &QualifiedName) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                            WHERE n.nspname = $1 AND p.proname = $2)",
            &[&name.schema.as_str(), &name.name.as_str()],
        )
        .await?;
    Ok(row.get(0))
}

fn ident_list(v: Vec<String>) -> Vec<Ident> {
    v.into_iter().map(Ident::new).collect()
}

/// Reads everything about the table `oid`.
pub async fn table_info(client: &Client, oid: u32) -> Result<TableInfo> {
    let relation = relation(client, oid).await?;
    Ok(TableInfo {
        columns: columns(client, oid).await?,
        constraints: constraints(client, oid).await?,
        indexes: indexes(client, oid).await?,
        incoming_fks: incoming_fks(client, oid).await?,
        dependents: dependents(client, oid).await?,
        materialized: materialized(client, oid).await?,
        triggers: triggers(client, oid).await?,
        trigger_defs: trigger_defs(client, oid).await?,
        rules: rules(client, oid).await?,
        policies: policies(client, oid).await?,
        publications: publications(client, oid).await?,
        grants: grants(client, oid).await?,
        sequences: sequences(client, oid).await?,
        identities: identities(client, oid).await?,
        ..relation
    })
}

/// The table's own row in pg_class; its lists are left empty for
/// `table_info` to fill.
async fn relation(client: &Client, oid: u32) -> Result<TableInfo> {
    let t = client
        .query_one(
            "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence::text, c.relispartition, \
                    EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid), \
                    c.relrowsecurity, pg_get_userbyid(c.relowner)::text, obj_description(c.oid, 'pg_class'), \
                    c.reltuples::float8, pg_table_size(c.oid), coalesce(c.reloptions, '{}'), c.relforcerowsecurity, \
                    (SELECT t.spcname::text FROM pg_tablespace t WHERE t.oid = c.reltablespace) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .context("cannot read the table from the catalog")?;
    Ok(TableInfo {
        oid,
        name: QualifiedName::new(t.get::<_, String>(0), t.get::<_, String>(1)),
        relkind: t.get(2),
        persistence: t.get(3),
        is_partition: t.get(4),
        has_inheritance: t.get(5),
        row_security: t.get(6),
        force_row_security: t.get(12),
        owner: t.get(7),
        comment: t.get(8),
        estimated_rows: t.get(9),
        bytes: t.get(10),
        reloptions: t.get(11),
        tablespace: t.get(13),
        columns: Vec::new(),
        constraints: Vec::new(),
        indexes: Vec::new(),
        incoming_fks: Vec::new(),
        dependents: Vec::new(),
        materialized: Vec::new(),
        triggers: Vec::new(),
        trigger_defs: Vec::new(),
        rules: Vec::new(),
        policies: Vec::new(),
        publications: Vec::new(),
        grants: Vec::new(),
        sequences: Vec::new(),
        identities: Vec::new(),
    })
}

async fn columns(client: &Client, oid: u32) -> Result<Vec<ColumnInfo>> {
    let columns = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    pg_get_expr(d.adbin, d.adrelid), a.attgenerated <> '', a.attidentity <> '', \
                    format_type(a.atttypid, NULL), \
                    (SELECT typcategory::text FROM pg_type WHERE oid = a.atttypid) \
             FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await?;
    let mut cols = Vec::new();
    for r in columns {
        let type_name: String = r.get(1);
        let base_type: String = r.get(6);
        let has_equality = client
            .simple_query(&format!("SELECT NULL::{base_type} IS DISTINCT FROM NULL::{base_type}"))
            .await
            .is_ok();
        cols.push(ColumnInfo {
            name: Ident::new(r.get::<_, String>(0)),
            type_name,
            base_type,
            not_null: r.get(2),
            default: r.get(3),
            generated: r.get(4),
            identity: r.get(5),
            has_equality,
            category: r.get(7),
        });
    }
    Ok(cols)
}

async fn constraints(client: &Client, oid: u32) -> Result<Vec<ConstraintInfo>> {
    Ok(client
        .query(
            "SELECT con.conname::text, con.contype::text, \
                    coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord) \
                              JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum), '{}'), \
                    pg_get_constraintdef(con.oid), \
                    CASE WHEN con.conindid <> 0 AND con.contype IN ('p','u','x') THEN (SELECT relname::text FROM pg_class WHERE oid = con.conindid) END, \
                    con.condeferrable, con.condeferred, \
                    CASE WHEN con.contype = 'f' THEN (SELECT nspname::text FROM pg_class fc JOIN pg_namespace fn ON fn.oid = fc.relnamespace WHERE fc.oid = con.confrelid) END, \
                    CASE WHEN con.contype = 'f' THEN (SELECT relname::text FROM pg_class WHERE oid = con.confrelid) END, \
                    coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord) \
                              JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum), '{}'), \
                    coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord) \
                              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                              WHERE i.indexrelid = con.conindid AND con.contype IN ('p','u') AND k.ord > i.indnkeyatts), '{}'), \
                    con.contype = 'u' AND pg_get_constraintdef(con.oid) LIKE 'UNIQUE NULLS NOT DISTINCT%', \
                    coalesce((SELECT x.reloptions FROM pg_class x WHERE x.oid = con.conindid AND con.contype IN ('p','u')), '{}'), \
                    (SELECT t.spcname::text FROM pg_class x JOIN pg_tablespace t ON t.oid = x.reltablespace \
                      WHERE x.oid = con.conindid AND con.contype IN ('p','u')) \
             FROM pg_constraint con WHERE con.conrelid = $1 ORDER BY con.contype, con.conname",
            &[&oid],
        )
        .await?
        .into_iter()
        .map(|r| {
            let schema: Option<String> = r.get(7);
            let rel: Option<String> = r.get(8);
            ConstraintInfo {
                name: Ident::new(r.get::<_, String>(0)),
                kind: r.get::<_, String>(1).chars().next().unwrap_or('?'),
                columns: ident_list(r.get(2)),
                definition: r.get(3),
                index: r.get::<_, Option<String>>(4).map(Ident::new),
                deferrable: r.get(5),
                deferred: r.get(6),
                referenced: schema.zip(rel).map(|(s, n)| QualifiedName::new(s, n)),
                referenced_columns: ident_list(r.get(9)),
                clauses: IndexClauses {
                    include: ident_list(r.get(10)),
                    nulls_not_distinct: r.get(11),
                    options: r.get(12),
                    tablespace: r.get(13),
                },
            }
        })
        .collect())
}

async fn indexes(client: &Client, oid: u32) -> Result<Vec<IndexInfo>> {
    Ok(client
        .query(
            "SELECT x.relname::text, \
                    CASE WHEN starts_with(pg_get_indexdef(i.indexrelid), p.prefix) \
                         THEN substr(pg_get_indexdef(i.indexrelid), length(p.prefix) + 1) END, i.indisunique, i.indisvalid, \
                    i.indexprs IS NOT NULL, i.indpred IS NOT NULL, \
                    coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord) \
                              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE k.ord <= i.indnkeyatts), '{}'), \
                    (SELECT conname::text FROM pg_constraint WHERE conindid = i.indexrelid AND conrelid = i.indrelid AND contype IN ('p','u','x')), \
                    pg_get_expr(i.indpred, i.indrelid), \
                    (SELECT t.spcname::text FROM pg_tablespace t WHERE t.oid = x.reltablespace) \
             FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid \
             CROSS JOIN LATERAL (SELECT 'CREATE ' || CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END || 'INDEX ' \
                    || quote_ident(x.relname) || ' ON ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || ' USING ' AS prefix \
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = i.indrelid) p \
             WHERE i.indrelid = $1 ORDER BY x.relname",
            &[&oid],
        )
        .await?
        .into_iter()
        .map(|r| IndexInfo {
            name: Ident::new(r.get::<_, String>(0)),
            tail: r.get(1),
            unique: r.get(2),
            valid: r.get(3),
            has_expressions: r.get(4),
            has_predicate: r.get(5),
            columns: ident_list(r.get(6)),
            constraint: r.get::<_, Option<String>>(7).map(Ident::new),
            predicate: r.get(8),
            tablespace: r.get(9),
        })
        .collect())
}

/// Foreign keys that reference this table: of other tables, and its own
/// that reference itself (a parent row of the same table).
async fn incoming_fks(client: &Client, oid: u32) -> Result<Vec<IncomingFkInfo>> {
    Ok(client
        .query(
            "SELECT con.conname::text, n.nspname::text, c.relname::text, pg_get_constraintdef(con.oid) \
             FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE con.contype = 'f' AND con.confrelid = $1 ORDER BY 2, 3, 1",
            &[&oid],
        )
        .await?
        .into_iter()
        .map(|r| IncomingFkInfo {
            name: Ident::new(r.get::<_, String>(0)),
            table: QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
            definition: r.get(3),
        })
        .collect())
}

/// Views, materialized views and functions that depend on the table.
async fn dependents(client: &Client, oid: u32) -> Result<Vec<DependentInfo>> {
    Ok(client
        .query(
            "SELECT DISTINCT n.nspname::text, v.relname::text, v.relkind::text, pg_get_viewdef(v.oid), coalesce(v.reloptions, '{}') \
             FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class \
             JOIN pg_namespace n ON n.oid = v.relnamespace \
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass \
               AND d.refobjid = $1 AND v.oid <> $1 \
             UNION ALL \
             SELECT n.nspname::text, p.proname::text || '(' || pg_get_function_identity_arguments(p.oid) || ')', 'f', '', '{}' \
             FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 \
             ORDER BY 1, 2",
            &[&oid],
        )
        .await?
        .into_iter()
        .map(|r| DependentInfo {
            name: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            kind: r.get::<_, String>(2).chars().next().unwrap_or('?'),
            definition: r.get(3),
            options: r.get(4),
        })
        .collect())
}

async fn materialized(client: &Client, oid: u32) -> Result<Vec<MatViewInfo>> {
    let views = client
        .query(
            "SELECT DISTINCT v.oid, n.nspname::text, v.relname::text, pg_get_viewdef(v.oid), pg_get_userbyid(v.relowner)::text, \
                    v.relispopulated, obj_description(v.oid, 'pg_class') \
             FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class \
             JOIN pg_namespace n ON n.oid = v.relnamespace \
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass \
               AND d.refobjid = $1 AND v.oid <> $1 AND v.relkind = 'm' ORDER BY 2, 3",
            &[&oid],
        )
        .await?;
    let mut out = Vec::new();
    for v in views {
        let mv: u32 = v.get(0);
        let indexes = client
            .query(
                "SELECT x.relname::text, i.indisunique, substr(pg_get_indexdef(i.indexrelid), strpos(pg_get_indexdef(i.indexrelid), ' USING ') + 7) \
                 FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid WHERE i.indrelid = $1 ORDER BY 1",
                &[&mv],
            )
            .await?
            .iter()
            .map(|r| (Ident::new(r.get::<_, String>(0)), r.get(1), r.get(2)))
            .collect();
        let readers = client
            .query(
                "SELECT DISTINCT (w.oid::regclass)::text FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
                 JOIN pg_class w ON w.oid = r.ev_class \
                 WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = $1 AND w.oid <> $1 ORDER BY 1",
                &[&mv],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        out.push(MatViewInfo {
            name: QualifiedName::new(v.get::<_, String>(1), v.get::<_, String>(2)),
            definition: v.get(3),
            owner: v.get(4),
            populated: v.get(5),
            comment: v.get(6),
            indexes,
            grants: grants(client, mv).await?,
            readers,
        });
    }
    Ok(out)
}

/// The first column of every row of `sql`, which takes the table's oid.
async fn names(client: &Client, sql: &str, oid: u32) -> Result<Vec<String>> {
    Ok(client.query(sql, &[&oid]).await?.iter().map(|r| r.get(0)).collect())
}

async fn triggers(client: &Client, oid: u32) -> Result<Vec<String>> {
    names(
        client,
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal ORDER BY 1",
        oid,
    )
    .await
}

async fn trigger_defs(client: &Client, oid: u32) -> Result<Vec<TriggerInfo>> {
    let rows = client
        .query(
            "SELECT t.tgname::text, t.tgtype, t.tgenabled::text, \
                    coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(t.tgattr::int2[]) WITH ORDINALITY k(attnum, ord) \
                              JOIN pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = k.attnum), '{}'), \
                    pg_get_triggerdef(t.oid), t.tgoldtable::text, t.tgnewtable::text, n.nspname::text, p.proname::text, \
                    t.tgargs, t.tgconstraint <> 0, t.tgdeferrable, t.tginitdeferred \
             FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE t.tgrelid = $1 AND NOT t.tgisinternal ORDER BY 1",
            &[&oid],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let def: String = r.get(4);
            let args: Vec<u8> = r.get(9);
            let mut args: Vec<String> = args
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            // Each argument ends with a NUL: the last piece is empty.
            args.pop();
            TriggerInfo {
                name: Ident::new(r.get::<_, String>(0)),
                kind: r.get(1),
                enabled: r.get::<_, String>(2).chars().next().unwrap_or('O'),
                columns: ident_list(r.get(3)),
                when: when_clause(&def),
                old_table: r.get::<_, Option<String>>(5).map(Ident::new),
                new_table: r.get::<_, Option<String>>(6).map(Ident::new),
                function: QualifiedName::new(r.get::<_, String>(7), r.get::<_, String>(8)),
                args,
                constraint: r.get(10),
                deferrable: r.get(11),
                initially_deferred: r.get(12),
            }
        })
        .collect())
}

/// The condition of ` WHEN (...)` in a trigger's definition: the balanced
/// parenthesis after the first ` WHEN (` outside quotes.
pub fn when_clause(def: &str) -> Option<String> {
    let bytes = def.as_bytes();
    let mut i = 0;
    let (mut single, mut double) = (false, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b' ' if !single && !double && def[i..].starts_with(" WHEN (") => {
                let start = i + " WHEN (".len();
                let mut depth = 1;
                let (mut s, mut d) = (false, false);
                for (j, ch) in def[start..].char_indices() {
                    match ch {
                        '\'' if !d => s = !s,
                        '"' if !s => d = !d,
                        '(' if !s && !d => depth += 1,
                        ')' if !s && !d => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(def[start..start + j].to_string());
                            }
                        }
                        _ => {}
                    }
                }
                return None;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

async fn rules(client: &Client, oid: u32) -> Result<Vec<String>> {
    names(
        client,
        "SELECT rulename::text FROM pg_rewrite WHERE ev_class = $1 AND rulename <> '_RETURN' ORDER BY 1",
        oid,
    )
    .await
}

async fn policies(client: &Client, oid: u32) -> Result<Vec<PolicyInfo>> {
    Ok(client
        .query(
            "SELECT p.polname::text, p.polpermissive, p.polcmd::text, \
                    coalesce((SELECT array_agg(CASE WHEN r = 0 THEN NULL ELSE pg_get_userbyid(r)::text END ORDER BY o) \
                              FROM unnest(p.polroles) WITH ORDINALITY u(r, o)), '{}'), \
                    pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid) \
             FROM pg_policy p WHERE p.polrelid = $1 ORDER BY 1",
            &[&oid],
        )
        .await?
        .into_iter()
        .map(|r| PolicyInfo {
            name: Ident::new(r.get::<_, String>(0)),
            permissive: r.get(1),
            command: r.get::<_, String>(2).chars().next().unwrap_or('*'),
            roles: r.get(3),
            using: r.get(4),
            check: r.get(5),
        })
        .collect())
}

/// A publication that publishes the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicationInfo {
    pub name: Ident,
    /// FOR ALL TABLES, or FOR TABLES IN SCHEMA of the table's schema: it
    /// publishes whatever is created there, the tool's tables included.
    pub wholesale: bool,
    pub via_root: bool,
    /// Its row filter and column list for the table (PostgreSQL 15 on).
    pub row_filter: Option<String>,
    pub columns: Vec<Ident>,
    /// Other partitioned tables or partitions it lists, whose changes
    /// publish_via_partition_root would publish under other names.
    pub lists_partitions: bool,
}

async fn publications(client: &Client, oid: u32) -> Result<Vec<PublicationInfo>> {
    let v15: bool = client
        .query_one("SELECT current_setting('server_version_num')::int >= 150000", &[])
        .await?
        .get(0);
    // Schema publications, row filters and column lists came with 15.
    let (schema, filter, columns) = if v15 {
        (
            "EXISTS (SELECT 1 FROM pg_publication_namespace pn WHERE pn.pnpubid = p.oid AND pn.pnnspid = c.relnamespace)",
            "pg_get_expr(pr.prqual, pr.prrelid)",
            "coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a \
                        WHERE a.attrelid = pr.prrelid AND a.attnum = ANY (pr.prattrs)), '{}')",
        )
    } else {
        ("false", "NULL::text", "'{}'::text[]")
    };
    let sql = format!(
        "SELECT p.pubname::text, p.puballtables OR {schema}, p.pubviaroot, {filter}, {columns}, \
                EXISTS (SELECT 1 FROM pg_publication_rel r2 JOIN pg_class c2 ON c2.oid = r2.prrelid \
                        WHERE r2.prpubid = p.oid AND r2.prrelid <> c.oid AND (c2.relkind = 'p' OR c2.relispartition)) \
         FROM pg_class c CROSS JOIN pg_publication p \
         LEFT JOIN pg_publication_rel pr ON pr.prpubid = p.oid AND pr.prrelid = c.oid \
         WHERE c.oid = $1 AND (pr.oid IS NOT NULL OR p.puballtables OR {schema}) ORDER BY 1"
    );
    Ok(client
        .query(&sql, &[&oid])
        .await?
        .iter()
        .map(|r| PublicationInfo {
            name: Ident::new(r.get::<_, String>(0)),
            wholesale: r.get(1),
            via_root: r.get(2),
            row_filter: r.get(3),
            columns: ident_list(r.get(4)),
            lists_partitions: r.get(5),
        })
        .collect())
}

/// Privileges granted to roles other than the owner.
async fn grants(client: &Client, oid: u32) -> Result<Vec<GrantInfo>> {
    Ok(client
        .query(
            "SELECT CASE WHEN g.grantee = 0 THEN NULL ELSE pg_get_userbyid(g.grantee)::text END, g.privilege_type, g.is_grantable \
             FROM pg_class c, aclexplode(c.relacl) g WHERE c.oid = $1 AND g.grantee <> c.relowner ORDER BY 1 NULLS FIRST, 2",
            &[&oid],
        )
        .await?
        .into_iter()
        .map(|r| GrantInfo {
            grantee: r.get(0),
            privilege: r.get(1),
            grantable: r.get(2),
        })
        .collect())
}

/// Sequences owned by a column or used in its default.
async fn sequences(client: &Client, oid: u32) -> Result<Vec<SequenceInfo>> {
    Ok(client
        .query(
            "SELECT DISTINCT sn.nspname::text, s.relname::text, a.attname::text, d.deptype = 'a' \
             FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
             JOIN pg_namespace sn ON sn.oid = s.relnamespace \
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.deptype = 'a' \
             UNION \
             SELECT sn.nspname::text, s.relname::text, a.attname::text, false \
             FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid \
             JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S' \
             JOIN pg_namespace sn ON sn.oid = s.relnamespace \
             JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum \
             WHERE ad.adrelid = $1 ORDER BY 1, 2, 3, 4 DESC",
            &[&oid],
        )
        .await?
        .into_iter()
        .map(|r| SequenceInfo {
            name: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            column: Ident::new(r.get::<_, String>(2)),
            owned: r.get(3),
        })
        .collect())
}

/// Identity columns, each with the sequence it draws from (an internal
/// dependency of the sequence on the column) and that sequence's options.
async fn identities(client: &Client, oid: u32) -> Result<Vec<IdentityInfo>> {
    Ok(client
        .query(
            "SELECT a.attname::text, a.attidentity = 'a', sn.nspname::text, s.relname::text, \
                    q.seqincrement, q.seqmin, q.seqmax, q.seqcache, q.seqcycle, \
                    ARRAY(SELECT CASE WHEN g.grantee = 0 THEN NULL ELSE pg_get_userbyid(g.grantee)::text END \
                          FROM aclexplode(s.relacl) g WHERE g.privilege_type = 'USAGE' AND g.grantee <> s.relowner) \
             FROM pg_attribute a \
             JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = a.attrelid \
                  AND d.refobjsubid = a.attnum AND d.classid = 'pg_class'::regclass AND d.deptype = 'i' \
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
             JOIN pg_namespace sn ON sn.oid = s.relnamespace \
             JOIN pg_sequence q ON q.seqrelid = s.oid \
             WHERE a.attrelid = $1 AND a.attidentity <> '' AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .context("cannot read the table's identity columns")?
        .into_iter()
        .map(|r| IdentityInfo {
            column: Ident::new(r.get::<_, String>(0)),
            always: r.get(1),
            sequence: QualifiedName::new(r.get::<_, String>(2), r.get::<_, String>(3)),
            increment: r.get(4),
            min: r.get(5),
            max: r.get(6),
            cache: r.get(7),
            cycle: r.get(8),
            usage: r.get(9),
        })
        .collect())
}
