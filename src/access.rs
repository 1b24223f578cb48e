//! Who may do what, and what replication sees: checked before anything
//! changes, so that a role lacking a privilege is told which one, instead
//! of failing half-way through a phase.

use crate::findings::{codes, Finding};
use crate::sql::QualifiedName;
use anyhow::Result;
use tokio_postgres::Client;

/// What the checks found: refusals stop the run, findings go in the plan.
#[derive(Default)]
pub struct Access {
    pub refusals: Vec<String>,
    pub findings: Vec<Finding>,
}

impl Access {
    fn warn(&mut self, code: &'static str, message: String) {
        self.findings.push(Finding::warning(code, message));
    }

    fn note(&mut self, code: &'static str, message: String) {
        self.findings.push(Finding::note(code, message));
    }
}

/// What the catalog says of the role, the table and replication: all the
/// access check reads.
#[derive(Clone, Debug, Default)]
pub struct AccessFacts {
    pub me: String,
    pub owner: String,
    pub member: bool,
    pub superuser: bool,
    /// BYPASSRLS (or superuser): row-level security never filters its reads.
    pub bypass_rls: bool,
    pub schema_create: bool,
    pub db_create: bool,
    /// Whether the role may write the control tables, when they exist.
    pub control_writable: Option<bool>,
    pub replident: String,
    pub replident_index: Option<String>,
    pub column_grants: bool,
    pub database: String,
    /// Privileges lacking on the objects around the table, as sentences.
    pub lacking: Vec<String>,
    pub slots: Vec<Slot>,
}

#[derive(Clone, Debug, Default)]
pub struct Slot {
    pub name: String,
    pub kind: String,
    /// A logical slot of this database.
    pub here: bool,
    pub active: bool,
    pub behind: String,
}

/// `locks_parents`: the method's batches lock the rows their foreign keys
/// reference (FOR KEY SHARE, which needs SELECT and UPDATE there).
pub async fn gather(client: &Client, oid: u32, locks_parents: bool) -> Result<AccessFacts> {
    let r = client
        .query_one(
            "SELECT current_user::text, pg_get_userbyid(c.relowner)::text, \
                    pg_has_role(current_user, c.relowner, 'USAGE'), \
                    coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false), \
                    coalesce((SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user), false), \
                    has_schema_privilege(c.relnamespace, 'CREATE'), \
                    has_database_privilege(current_database(), 'CREATE'), \
                    to_regclass('repartition.migrations') IS NOT NULL, \
                    c.relreplident::text, \
                    (SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident), \
                    EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = c.oid AND t.attnum > 0 \
                              AND NOT t.attisdropped AND t.attacl IS NOT NULL), \
                    current_database()::text \
             FROM pg_class c WHERE c.oid = $1",
            &[&oid],
        )
        .await?;
    let mut f = AccessFacts {
        me: r.get(0),
        owner: r.get(1),
        member: r.get(2),
        superuser: r.get(3),
        bypass_rls: r.get(4),
        schema_create: r.get(5),
        db_create: r.get(6),
        control_writable: None,
        replident: r.get(8),
        replident_index: r.get(9),
        column_grants: r.get(10),
        database: r.get(11),
        lacking: Vec::new(),
        slots: Vec::new(),
    };
    let control_exists: bool = r.get(7);
    if control_exists {
        f.control_writable = Some(
            client
                .query_one(
                    "SELECT has_schema_privilege('repartition', 'USAGE') \
                        AND has_table_privilege('repartition.migrations', 'INSERT, UPDATE') \
                        AND has_table_privilege('repartition.batches', 'INSERT') \
                        AND has_table_privilege('repartition.events', 'INSERT')",
                    &[],
                )
                .await?
                .get(0),
        );
    }
    if !f.superuser {
        f.lacking = lacking(client, oid, locks_parents).await?;
    }
    // Slots retain the WAL the migration writes until their consumer reads
    // it; logical ones also decode every moved row.
    f.slots = client
        .query(
            "SELECT slot_name::text, slot_type, coalesce(database::text = current_database()::text, false), active, \
                    coalesce(pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)), 'unknown') \
             FROM pg_replication_slots ORDER BY 1",
            &[],
        )
        .await
        .unwrap_or_default()
        .iter()
        .map(|s| Slot {
            name: s.get(0),
            kind: s.get(1),
            here: s.get(2),
            active: s.get(3),
            behind: s.get(4),
        })
        .collect();
    Ok(f)
}

/// Privileges the phases need on objects around the table that the role
/// lacks.
async fn lacking(client: &Client, oid: u32, locks_parents: bool) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT DISTINCT format('the REFERENCES privilege on %s, which a foreign key of the table references', confrelid::regclass) \
             FROM pg_constraint WHERE conrelid = $1 AND contype = 'f' AND NOT has_table_privilege(confrelid, 'REFERENCES') \
             UNION ALL \
             SELECT DISTINCT format('the SELECT and UPDATE privileges on %s, whose rows each batch locks FOR KEY SHARE while it moves the rows referencing them', confrelid::regclass) \
             FROM pg_constraint WHERE $2 AND conrelid = $1 AND contype = 'f' \
               AND NOT (has_table_privilege(confrelid, 'SELECT') AND has_any_column_privilege(confrelid, 'UPDATE')) \
             UNION ALL \
             SELECT DISTINCT format('ownership of the view %s, which is rebound to the new table', v.oid::regclass) \
             FROM pg_depend d JOIN pg_rewrite w ON w.oid = d.objid JOIN pg_class v ON v.oid = w.ev_class \
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = $1 AND v.oid <> $1 \
               AND NOT pg_has_role(v.relowner, 'USAGE') \
             UNION ALL \
             SELECT DISTINCT format('ownership of %s, whose foreign key references the table', t.oid::regclass) \
             FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid \
             WHERE k.confrelid = $1 AND k.contype = 'f' AND k.conrelid <> $1 AND NOT pg_has_role(t.relowner, 'USAGE') \
             ORDER BY 1",
            &[&oid, &locks_parents],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// What the facts mean for the migration of `table`. Pure.
pub fn check(table: &QualifiedName, f: &AccessFacts) -> Access {
    let mut a = Access::default();
    let (me, owner) = (&f.me, &f.owner);
    if !f.member && !f.superuser {
        a.refusals.push(format!(
            "the role {me} does not own {table} (its owner is {owner}) and is not a member of {owner}: renaming and altering the table needs that (GRANT {owner} TO {me}, or connect as {owner})"
        ));
    } else if me != owner {
        a.note(
            codes::OWNER_OWNS_OBJECTS,
            format!("the tool connects as {me}; every object it creates is given to the table's owner {owner}"),
        );
    }
    if !f.schema_create && !f.superuser {
        a.refusals.push(format!(
            "the role {me} lacks the CREATE privilege on the schema {}, needed for the partitioned table and its partitions",
            table.schema
        ));
    }
    match f.control_writable {
        Some(false) => a.refusals.push(format!(
            "the role {me} cannot write the control tables in the schema repartition (USAGE on the schema and INSERT, UPDATE on its tables are needed; its owner can grant them)"
        )),
        Some(true) => {}
        None if !f.db_create && !f.superuser => a.refusals.push(format!(
            "the role {me} lacks the CREATE privilege on the database {}, needed once to create the control schema repartition (or have its owner run `migrate` once)",
            f.database
        )),
        None => {}
    }
    for l in &f.lacking {
        a.refusals.push(format!("the role {me} lacks {l}"));
    }
    match (f.replident.as_str(), &f.replident_index) {
        ("f", _) => a.warn(codes::REPLICA_IDENTITY_NOT_INHERITED, format!(
            "{table} has REPLICA IDENTITY FULL, which the partitioned table does not inherit: set it on each partition after the swap, or logical replicas stop receiving its updates and deletes"
        )),
        ("i", Some(ix)) => a.warn(codes::REPLICA_IDENTITY_NOT_INHERITED, format!(
            "{table} uses the index {ix} as its replica identity, which the partitioned table does not inherit: choose an index on each partition after the swap (its unique keys include the partition key)"
        )),
        ("n", _) => a.note(codes::REPLICA_IDENTITY_NOTHING, format!("{table} has REPLICA IDENTITY NOTHING, kept as it is on nothing new")),
        _ => {}
    }
    if f.column_grants {
        a.warn(codes::COLUMN_GRANTS_DROPPED, format!(
            "{table} has column-level privileges, which are not carried over: grant them again on the partitioned table after the swap"
        ));
    }
    for s in &f.slots {
        let (name, kind, behind) = (&s.name, &s.kind, &s.behind);
        let state = if s.active { "active" } else { "inactive" };
        if kind == "logical" && s.here {
            a.warn(codes::SLOT_DECODES_EVERYTHING, format!(
                "the logical replication slot {name} ({state}, {behind} behind) decodes this database: a consumer reading it through a publication sees only the tables published, which the swap hands over; one that decodes every table (wal2json, test_decoding) receives the tool's writes as well (the partitioned copy's rows; for move each moved row as a delete and an insert); it retains the migration's WAL until its consumer reads it (throttle.max_slot_wal_mb makes the run wait for it)"
            ));
        } else {
            a.note(codes::SLOT_RETAINS_WAL, format!(
                "the {kind} replication slot {name} ({state}, {behind} behind) retains the migration's WAL until its consumer reads it; throttle.max_slot_wal_mb makes the run wait for it"
            ));
        }
    }
    a
}
