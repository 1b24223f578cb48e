//! Every name the tool derives from the table's: the partitioned copy,
//! the retired original, the routing and mirror objects, the helper
//! constraints and the partitions' indexes. One module, so that abort,
//! the checks for names already taken and the tests agree on them.

use super::{Mirror, Routing};
use crate::sql::{Ident, QualifiedName};

/// The partitioned table while it is built.
pub fn shadow(table: &QualifiedName) -> QualifiedName {
    table.sibling(table.name.derive("__part"))
}

/// The original once it has stepped aside: emptied by the move method,
/// retired (and kept in step) by the sync method, the first partition of
/// the attach method.
pub fn old(table: &QualifiedName, method: crate::plan_file::Method) -> QualifiedName {
    use crate::plan_file::Method;
    table.sibling(table.name.derive(match method {
        Method::Move => "__orig",
        Method::Sync => "__retired",
        // A list first partition is named for its value instead, by the
        // plan's naming template.
        Method::Attach => "_p0",
    }))
}

/// The attach method's original, when a new partition is named `_p0`.
pub fn first_partition_below(table: &QualifiedName) -> QualifiedName {
    table.sibling(table.name.derive("_p_below"))
}

/// The name the routing view takes for a moment during the swap.
pub fn retired_view(table: &QualifiedName) -> QualifiedName {
    table.sibling(table.name.derive("__view"))
}

/// The default partition, when the plan asks for one.
pub fn default_partition(table: &QualifiedName) -> Ident {
    table.name.derive("_default")
}

/// The CHECK constraint that proves the attach method's cutoff (and the
/// one a split's abort adds to attach the first partition again).
pub fn cutoff_check(table: &QualifiedName) -> Ident {
    table.name.derive("__cutoff")
}

/// The CHECK constraint that proves a key that may be NULL has none,
/// before the column is made NOT NULL.
pub fn key_not_null_check(table: &QualifiedName) -> Ident {
    table.name.derive("__key_not_null")
}

/// A unique constraint's or an index's name on the partitioned table
/// before the swap.
pub fn on_shadow(name: &Ident) -> Ident {
    name.derive("__p")
}

/// The name the original's constraint or index steps aside to.
pub fn stepped_aside(name: &Ident) -> Ident {
    name.derive("__o")
}

/// The unique index the attach method builds with the partition key.
pub fn key_index(constraint: &Ident) -> Ident {
    constraint.derive("__k")
}

/// The index of partition `leaf` for the `k`-th deferred index.
pub fn partition_index(leaf: &Ident, k: usize) -> Ident {
    leaf.derive(&format!("_{k}_idx"))
}

/// The sync method's triggers and their functions.
pub fn mirror(table: &QualifiedName) -> Mirror {
    let f = |s: &str| table.sibling(table.name.derive(s));
    let t = |s: &str| table.name.derive(s);
    Mirror {
        function: f("__mirror"),
        trigger: t("__mirror"),
        truncate_function: f("__mirror_trunc"),
        truncate_trigger: t("__mirror_trunc"),
        back_function: f("__back"),
        back_trigger: t("__back"),
        back_truncate_function: f("__back_trunc"),
        back_truncate_trigger: t("__back_trunc"),
    }
}

/// The permissive policy that lets the tool's sessions see every row of a
/// table whose FORCE ROW LEVEL SECURITY binds the tool's role.
pub fn tool_policy(table: &QualifiedName) -> Ident {
    table.name.derive("__tool")
}

/// The routing view's rule, triggers and functions.
pub fn routing(table: &QualifiedName) -> Routing {
    let f = |s: &str| table.sibling(table.name.derive(s));
    let t = |s: &str| table.name.derive(s);
    Routing {
        insert_rule: t("__ins_rule"),
        insert_function: f("__ins"),
        update_function: f("__upd"),
        delete_function: f("__del"),
        insert_trigger: t("__ins"),
        update_trigger: t("__upd"),
        delete_trigger: t("__del"),
    }
}

/// A materialized view while it is built again, before it takes the name.
pub fn rebuilt(name: &QualifiedName) -> QualifiedName {
    name.sibling(name.name.derive("__new"))
}

/// An index of a materialized view built again, before it takes the name.
pub fn rebuilt_index(name: &Ident) -> Ident {
    name.derive("__new")
}
