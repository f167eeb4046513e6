//! The inventory: every object PostgreSQL ties to the table, and what the migration does with it.
//!
//! Two sources, so that nothing is left out by a list someone forgot to extend:
//!
//! - **`pg_depend`**: every object that depends on the table, or on its row type (indexes,
//!   constraints both ways, defaults, triggers, rules, views, policies, statistics objects,
//!   publication memberships, owned sequences, inheritance children, functions, other tables'
//!   columns). Each is classified by its catalog and a few of its fields ([`classify`]); one of an
//!   unknown catalog is [`Kind::Unknown`], reported as not carried.
//! - **the table's own catalog entries**, which `pg_depend` does not record: owner, grants,
//!   column privileges, comments, security labels, storage parameters, tablespace, replica
//!   identity, statistics targets, row security, `FOR ALL TABLES` publications.
//!
//! Each [`Kind`] has one [`Fate`] and a sentence saying how ([`Kind::fate`]); `docs/carry-over.md`
//! and the README list the same catalogue ([`catalogue_markdown`], [`readme_markdown`]; a test
//! keeps both equal to it).

use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::error::{Error, Result};

/// What the migration does with a dependent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Moved or recreated on the new table at the swap (or right after it).
    Carried,
    /// Made again on the new table when it is created or after the copy.
    Rebuilt,
    /// Left bound to the old table; `plan` and `run` name it with what to do.
    NotCarried,
    /// The run refuses the table while it exists.
    Refused,
    /// Part of the old table itself; it stays with it (nothing to do).
    StaysWithOld,
}

impl Fate {
    pub fn label(self) -> &'static str {
        match self {
            Fate::Carried => "carried",
            Fate::Rebuilt => "rebuilt",
            Fate::NotCarried => "NOT carried",
            Fate::Refused => "REFUSED",
            Fate::StaysWithOld => "stays",
        }
    }
}

macro_rules! kinds {
    ($($kind:ident => $name:literal,)*) => {
        /// Every kind of dependent the survey knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Kind { $($kind,)* }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)*];

            /// A short name, for the inventory's lines.
            pub fn name(self) -> &'static str {
                match self { $(Kind::$kind => $name,)* }
            }
        }
    };
}

kinds! {
    Owner => "owner",
    Grants => "grants",
    OwnedSequence => "owned sequence",
    Comment => "comment",
    StatisticsTarget => "column statistics target",
    RowSecurity => "row security",
    Policy => "policy",
    Trigger => "trigger",
    Publication => "publication membership",
    AllTablesPublication => "FOR ALL TABLES publication",
    View => "view",
    MaterializedView => "materialized view",
    OutboundForeignKey => "foreign key",
    InboundForeignKey => "foreign key onto the table",
    NotValidCheck => "NOT VALID check constraint",
    Default => "column default or generation expression",
    Check => "check constraint",
    NotNull => "NOT NULL constraint",
    PrimaryKey => "primary key",
    Unique => "unique constraint",
    Index => "index",
    StorageParameters => "storage parameters",
    ReplicaIdentity => "replica identity",
    ColumnPrivileges => "column privileges",
    ExtendedStatistics => "extended statistics",
    SecurityLabel => "security label",
    Tablespace => "tablespace",
    Exclusion => "exclusion constraint",
    NoInheritCheck => "NO INHERIT check constraint",
    ConstraintTrigger => "constraint trigger",
    TransitionTrigger => "row trigger with transition tables",
    FilteredPublication => "publication membership with a row filter or column list",
    Function => "function",
    RowTypeColumn => "column of the table's row type",
    InheritanceChild => "inheritance child",
    SelfForeignKey => "self-referencing foreign key",
    Rule => "rewrite rule",
    RowType => "row type",
    Toast => "TOAST table",
    Partition => "partition",
    OwnPublication => "pgrepart's publication",
    Internal => "internal object",
    Unknown => "other dependent",
}

impl Kind {
    /// What the migration does with this kind, and how (same database or another one).
    pub fn fate(self, cross_db: bool) -> (Fate, &'static str) {
        use Fate::*;
        use Kind::*;
        if cross_db {
            match self {
                Policy | RowSecurity => {
                    return (
                        NotCarried,
                        "policies stay on the source: create them on the new table",
                    );
                }
                Trigger => {
                    return (
                        NotCarried,
                        "triggers stay on the source: create them on the new table",
                    );
                }
                View | MaterializedView => {
                    return (
                        NotCarried,
                        "stays on the source reading the old table: create it in the target database",
                    );
                }
                Publication | AllTablesPublication => {
                    return (
                        NotCarried,
                        "publications stay on the source: add the new table to one in the target database",
                    );
                }
                Grants => {
                    return (
                        Carried,
                        "granted again on the new table to the roles the target has; the others are reported",
                    );
                }
                _ => {}
            }
        }
        match self {
            Owner => (
                Carried,
                "the new table and its partitions get the old table's owner",
            ),
            Grants => (Carried, "granted again on the new table in the swap"),
            OwnedSequence => (
                Carried,
                "owned by the new table's column in the swap; an identity continues from the old sequence's value",
            ),
            Comment => (
                Carried,
                "set on the new table, its columns, and the indexes and constraints that take the old names",
            ),
            StatisticsTarget => (Carried, "set on the new table's column in the swap"),
            RowSecurity => (Carried, "enabled (and forced) on the new table in the swap"),
            Policy => (Carried, "created on the new table in the swap"),
            Trigger => (
                Carried,
                "created on the new table in the swap with its enabled state (never fires for pgrepart's own writes)",
            ),
            Publication => (
                Carried,
                "the new table is added to the publication in the swap",
            ),
            AllTablesPublication => (Carried, "publishes the new table by itself"),
            View => (
                Carried,
                "recreated in the swap (CREATE OR REPLACE VIEW) to read the new table",
            ),
            MaterializedView => (
                Carried,
                "rebuilt over the new table right after the swap, then takes the old name",
            ),
            OutboundForeignKey => (
                Carried,
                "added NOT VALID per partition in the swap, validated after it, then set on the partitioned table",
            ),
            InboundForeignKey => (
                Carried,
                "recreated onto the new key when the referencing table has the partition-key columns; otherwise refused, or dropped with --drop-inbound-fks",
            ),
            NotValidCheck => (
                Carried,
                "left out while the new table is filled, added NOT VALID in the swap",
            ),
            Default => (Rebuilt, "copied to the generated table"),
            Check => (Rebuilt, "copied to the generated table"),
            NotNull => (Rebuilt, "copied to the generated table"),
            PrimaryKey => (
                Rebuilt,
                "the new primary key is the old one plus the partition-key columns; it takes the old name in the swap",
            ),
            Unique => (
                Rebuilt,
                "built with the partition-key columns added, or as a plain index when they cannot be",
            ),
            Index => (
                Rebuilt,
                "built on the new table after the copy; it takes the old name in the swap",
            ),
            StorageParameters => (Rebuilt, "set on each partition of the generated table"),
            ReplicaIdentity => (
                Rebuilt,
                "FULL is set on the generated table and its partitions; an index identity becomes the new primary key",
            ),
            ColumnPrivileges => (
                NotCarried,
                "grant them on the new table's columns after the swap",
            ),
            ExtendedStatistics => (
                NotCarried,
                "CREATE STATISTICS on the new table after the swap",
            ),
            SecurityLabel => (NotCarried, "SECURITY LABEL on the new table after the swap"),
            Tablespace => (
                NotCarried,
                "the partitions are in the database's default tablespace: ALTER TABLE ... SET TABLESPACE on each",
            ),
            Exclusion => (
                NotCarried,
                "add it on the new table with the partition-key columns compared by =",
            ),
            NoInheritCheck => (
                NotCarried,
                "a partitioned table cannot have it: add it on each partition",
            ),
            ConstraintTrigger => (NotCarried, "recreate it on the new table or its partitions"),
            TransitionTrigger => (
                NotCarried,
                "partitioned tables have no row triggers with transition tables: rewrite it as a statement trigger",
            ),
            FilteredPublication => (
                NotCarried,
                "add the new table to the publication with the same filter or columns",
            ),
            Function => (
                NotCarried,
                "it keeps the old table's row type or name: CREATE OR REPLACE it after the swap",
            ),
            RowTypeColumn => (
                NotCarried,
                "it keeps the old table's row type: change its type after the swap",
            ),
            InheritanceChild => (NotCarried, "it stays a child of the old table"),
            SelfForeignKey => (
                NotCarried,
                "recreate it on the new table, onto its key and partition key",
            ),
            Rule => (
                Refused,
                "a rule rewrites the application's writes: drop it before the migration, recreate it after the swap",
            ),
            RowType => (StaysWithOld, "the old table's composite type"),
            Toast => (StaysWithOld, "the old table's TOAST storage"),
            Partition => (
                StaysWithOld,
                "its rows are copied; it stays a partition of the old table",
            ),
            OwnPublication => (StaysWithOld, "dropped when the migration ends"),
            Internal => (
                StaysWithOld,
                "made by PostgreSQL for another dependent (e.g. a foreign key's triggers)",
            ),
            Unknown => (
                NotCarried,
                "pgrepart does not know this kind of dependent: check it after the swap",
            ),
        }
    }
}

/// One dependent of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependent {
    pub kind: Kind,
    /// As `pg_describe_object` names it, or the property (e.g. `grants on table public.t`).
    pub object: String,
    pub fate: Fate,
    pub how: String,
    /// `(pg_class oid of its catalog, its oid)` for an object `pg_depend` names; none for a property.
    #[serde(skip)]
    pub id: Option<(u32, u32)>,
}

/// Classifies one object that `pg_depend` ties to the table (pure). `catalog` is its catalog
/// (`pg_class`, `pg_constraint`, ...); `detail` what the survey read of it (see [`DETAIL_SQL`]);
/// `via_type` whether it depends on the table's row type rather than on the table;
/// `column` whether the object is a column (`objsubid` > 0).
pub fn classify(catalog: &str, detail: &str, via_type: bool, column: bool) -> Kind {
    let flags: Vec<&str> = detail.split('+').collect();
    let has = |f: &str| flags.contains(&f);
    let head = flags.first().copied().unwrap_or("");
    match catalog {
        "pg_type" => Kind::RowType,
        "pg_proc" => Kind::Function,
        "pg_attrdef" => Kind::Default,
        "pg_policy" => Kind::Policy,
        "pg_statistic_ext" => Kind::ExtendedStatistics,
        "pg_class" if column || via_type => Kind::RowTypeColumn,
        "pg_class" => match head {
            "i" | "I" => Kind::Index,
            "S" => Kind::OwnedSequence,
            "t" => Kind::Toast,
            "r" | "p" | "f" if has("partition") => Kind::Partition,
            "r" | "p" | "f" => Kind::InheritanceChild,
            _ => Kind::Unknown,
        },
        "pg_constraint" => match head {
            "p" => Kind::PrimaryKey,
            "u" => Kind::Unique,
            "x" => Kind::Exclusion,
            "t" => Kind::ConstraintTrigger,
            "c" if has("noinherit") => Kind::NoInheritCheck,
            "c" if has("notvalid") => Kind::NotValidCheck,
            "c" => Kind::Check,
            "n" => Kind::NotNull,
            "f" if has("self") => Kind::SelfForeignKey,
            "f" if has("inbound") => Kind::InboundForeignKey,
            "f" => Kind::OutboundForeignKey,
            _ => Kind::Unknown,
        },
        "pg_rewrite" => match head {
            "rule" => Kind::Rule,
            "v" => Kind::View,
            "m" => Kind::MaterializedView,
            _ => Kind::Unknown,
        },
        "pg_trigger" => match head {
            "internal" => Kind::Internal,
            "constraint" => Kind::ConstraintTrigger,
            "transition" => Kind::TransitionTrigger,
            "row" | "statement" => Kind::Trigger,
            _ => Kind::Unknown,
        },
        "pg_publication_rel" => match head {
            "own" => Kind::OwnPublication,
            "filtered" => Kind::FilteredPublication,
            _ => Kind::Publication,
        },
        _ => Kind::Unknown,
    }
}

/// What [`classify`] needs of each object, read by catalog (`$1` the table, `$2` pgrepart's own
/// publications). `to_jsonb` reads `prqual`/`prattrs` where the server has them (15 and later).
const DETAIL_SQL: &str = "CASE o.classid \
    WHEN 'pg_class'::regclass THEN (SELECT c.relkind::text || CASE WHEN c.relispartition THEN '+partition' ELSE '' END \
        FROM pg_class c WHERE c.oid = o.objid) \
    WHEN 'pg_constraint'::regclass THEN (SELECT k.contype::text \
        || CASE WHEN k.conrelid <> $1 THEN '+inbound' ELSE '' END \
        || CASE WHEN k.contype = 'f' AND k.conrelid = $1 AND k.confrelid = $1 THEN '+self' ELSE '' END \
        || CASE WHEN k.connoinherit THEN '+noinherit' ELSE '' END \
        || CASE WHEN NOT k.convalidated THEN '+notvalid' ELSE '' END \
        FROM pg_constraint k WHERE k.oid = o.objid) \
    WHEN 'pg_rewrite'::regclass THEN (SELECT CASE WHEN r.ev_class = $1 THEN 'rule' ELSE v.relkind::text END \
        FROM pg_rewrite r JOIN pg_class v ON v.oid = r.ev_class WHERE r.oid = o.objid) \
    WHEN 'pg_trigger'::regclass THEN (SELECT CASE WHEN t.tgisinternal THEN 'internal' \
            WHEN t.tgconstraint <> 0 THEN 'constraint' \
            WHEN t.tgtype & 1 = 1 AND (t.tgoldtable IS NOT NULL OR t.tgnewtable IS NOT NULL) THEN 'transition' \
            WHEN t.tgtype & 1 = 1 THEN 'row' ELSE 'statement' END \
        FROM pg_trigger t WHERE t.oid = o.objid) \
    WHEN 'pg_publication_rel'::regclass THEN (SELECT CASE WHEN p.pubname = ANY($2::text[]) THEN 'own' \
            WHEN to_jsonb(pr) ->> 'prqual' IS NOT NULL OR to_jsonb(pr) ->> 'prattrs' IS NOT NULL THEN 'filtered' \
            ELSE '' END \
        FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE pr.oid = o.objid) \
    END";

/// The inventory of `table` (its OID): what `pg_depend` ties to it and to its row type, then its
/// own catalog properties. `own_publications` are pgrepart's (shown as staying with the old
/// table); `cross_db` whether the new table is in another database.
pub async fn survey(
    client: &impl GenericClient,
    table: u32,
    own_publications: &[String],
    cross_db: bool,
) -> Result<Vec<Dependent>> {
    let ctx = |e| Error::db("surveying what depends on the table", e);
    let sql = format!(
        "WITH o AS ( \
           SELECT DISTINCT d.classid, d.objid, d.objsubid, d.refclassid = 'pg_type'::regclass AS via_type \
           FROM pg_depend d \
           WHERE ((d.refclassid = 'pg_class'::regclass AND d.refobjid = $1) \
              OR (d.refclassid = 'pg_type'::regclass AND d.refobjid IN \
                   (SELECT reltype FROM pg_class WHERE oid = $1 \
                    UNION ALL SELECT typarray FROM pg_type WHERE typrelid = $1))) \
             AND NOT (d.classid = 'pg_class'::regclass AND d.objid = $1)) \
         SELECT DISTINCT ON (o.classid, o.objid, o.objsubid) \
                o.classid::regclass::text, coalesce({DETAIL_SQL}, ''), o.via_type, o.objsubid > 0, \
                pg_describe_object(o.classid, o.objid, o.objsubid), o.classid, o.objid \
         FROM o ORDER BY o.classid, o.objid, o.objsubid, o.via_type"
    );
    let mut out: Vec<Dependent> = Vec::new();
    let mut push_with = |kind: Kind, object: String, id: Option<(u32, u32)>| {
        let (fate, how) = kind.fate(cross_db);
        out.push(Dependent {
            kind,
            object,
            fate,
            how: how.to_string(),
            id,
        });
    };
    for r in client
        .query(&sql, &[&table, &own_publications])
        .await
        .map_err(ctx)?
    {
        let catalog: String = r.get(0);
        let detail: String = r.get(1);
        push_with(
            classify(&catalog, &detail, r.get(2), r.get(3)),
            r.get(4),
            Some((r.get(5), r.get(6))),
        );
    }
    let mut push = |kind: Kind, object: String| push_with(kind, object, None);

    let p = client
        .query_one(
            "SELECT pg_describe_object('pg_class'::regclass, c.oid, 0), pg_get_userbyid(c.relowner)::text, \
                    c.relacl IS NOT NULL, c.reloptions IS NOT NULL, c.reltablespace <> 0, c.relreplident::text, \
                    c.relrowsecurity, obj_description(c.oid, 'pg_class') IS NOT NULL, \
                    (SELECT string_agg(a.attname::text, ', ' ORDER BY a.attnum) FROM pg_attribute a \
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL), \
                    (SELECT string_agg(a.attname::text, ', ' ORDER BY a.attnum) FROM pg_attribute a \
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                       AND col_description(c.oid, a.attnum) IS NOT NULL), \
                    (SELECT string_agg(a.attname::text, ', ' ORDER BY a.attnum) FROM pg_attribute a \
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                       AND coalesce(a.attstattarget::int, -1) >= 0), \
                    (SELECT string_agg(s.provider, ', ' ORDER BY s.provider) FROM pg_seclabel s \
                     WHERE s.classoid = 'pg_class'::regclass AND s.objoid = c.oid), \
                    (SELECT string_agg(quote_ident(p.pubname), ', ' ORDER BY p.pubname) FROM pg_publication p \
                     WHERE p.puballtables AND NOT p.pubname = ANY($2::text[])), \
                    (SELECT string_agg(x.what, ', ' ORDER BY x.what) FROM ( \
                       SELECT 'constraint ' || k.conname AS what FROM pg_constraint k \
                       WHERE k.conrelid = c.oid AND obj_description(k.oid, 'pg_constraint') IS NOT NULL \
                       UNION ALL SELECT 'index ' || i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
                       WHERE x.indrelid = c.oid AND obj_description(i.oid, 'pg_class') IS NOT NULL) x) \
             FROM pg_class c WHERE c.oid = $1",
            &[&table, &own_publications],
        )
        .await
        .map_err(ctx)?;
    let name: String = p.get(0);
    push(
        Kind::Owner,
        format!("owner of {name} ({})", p.get::<_, String>(1)),
    );
    if p.get(2) {
        push(Kind::Grants, format!("grants on {name}"));
    }
    if p.get(3) {
        push(
            Kind::StorageParameters,
            format!("storage parameters of {name}"),
        );
    }
    if p.get(4) {
        push(Kind::Tablespace, format!("tablespace of {name}"));
    }
    let identity: String = p.get(5);
    if identity != "d" {
        let which = match identity.as_str() {
            "f" => "FULL",
            "i" => "USING INDEX",
            _ => "NOTHING",
        };
        push(
            Kind::ReplicaIdentity,
            format!("replica identity {which} of {name}"),
        );
    }
    if p.get(6) {
        push(Kind::RowSecurity, format!("row security of {name}"));
    }
    if p.get(7) {
        push(Kind::Comment, format!("comment on {name}"));
    }
    let listed = |i: usize| p.get::<_, Option<String>>(i);
    if let Some(cols) = listed(8) {
        push(
            Kind::ColumnPrivileges,
            format!("privileges on columns {cols} of {name}"),
        );
    }
    if let Some(cols) = listed(9) {
        push(
            Kind::Comment,
            format!("comments on columns {cols} of {name}"),
        );
    }
    if let Some(cols) = listed(10) {
        push(
            Kind::StatisticsTarget,
            format!("statistics targets of columns {cols} of {name}"),
        );
    }
    if let Some(providers) = listed(11) {
        push(
            Kind::SecurityLabel,
            format!("security labels ({providers}) on {name}"),
        );
    }
    if let Some(pubs) = listed(12) {
        push(
            Kind::AllTablesPublication,
            format!("publications for all tables: {pubs}"),
        );
    }
    if let Some(objects) = listed(13) {
        push(Kind::Comment, format!("comments on {objects} of {name}"));
    }
    Ok(out)
}

/// The inventory as lines for `plan`, `not carried` and `refused` first.
pub fn lines(items: &[Dependent]) -> Vec<String> {
    let order = |f: Fate| match f {
        Fate::Refused => 0,
        Fate::NotCarried => 1,
        Fate::Carried => 2,
        Fate::Rebuilt => 3,
        Fate::StaysWithOld => 4,
    };
    let mut sorted: Vec<&Dependent> = items.iter().collect();
    sorted.sort_by_key(|d| (order(d.fate), d.object.clone()));
    sorted
        .iter()
        .map(|d| format!("{:<11} {}: {}", d.fate.label(), d.object, d.how))
        .collect()
}

/// The catalogue as a markdown table (`docs/carry-over.md` holds it between markers).
pub fn catalogue_markdown() -> String {
    let mut s = String::from(
        "| dependent | same database | another database (`--target`) |\n| --- | --- | --- |\n",
    );
    for k in Kind::ALL {
        let (fate, how) = k.fate(false);
        let (xfate, xhow) = k.fate(true);
        let cross = if (xfate, xhow) == (fate, how) {
            "the same".to_string()
        } else {
            format!("**{}**: {xhow}", xfate.label())
        };
        s += &format!("| {} | **{}**: {how} | {cross} |\n", k.name(), fate.label());
    }
    s
}

/// The README's summary: the kinds by fate, in one paragraph each.
pub fn readme_markdown() -> String {
    let mut s = String::new();
    for (fate, lead) in [
        (
            Fate::Carried,
            "Carried over (at the swap, or right after it)",
        ),
        (Fate::Rebuilt, "Rebuilt on the new table"),
        (Fate::NotCarried, "Not carried, named by `plan` and `run`"),
        (Fate::Refused, "Refused"),
    ] {
        let names: Vec<&str> = Kind::ALL
            .iter()
            .filter(|k| k.fate(false).0 == fate)
            .map(|k| k.name())
            .collect();
        s += &format!("- **{lead}:** {}.\n", names.join(", "));
    }
    s
}

/// The text between `<!-- begin {marker} -->` and `<!-- end {marker} -->` in `doc`.
pub fn between_markers<'a>(doc: &'a str, marker: &str) -> Option<&'a str> {
    let begin = format!("<!-- begin {marker} -->\n");
    let end = format!("<!-- end {marker} -->");
    let start = doc.find(&begin)? + begin.len();
    let stop = start + doc[start..].find(&end)?;
    Some(&doc[start..stop])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_classified_by_catalog_and_detail() {
        let cases = [
            ("pg_class", "i", false, false, Kind::Index),
            ("pg_class", "S", false, false, Kind::OwnedSequence),
            ("pg_class", "t", false, false, Kind::Toast),
            ("pg_class", "r", false, false, Kind::InheritanceChild),
            ("pg_class", "r+partition", false, false, Kind::Partition),
            ("pg_class", "r", true, true, Kind::RowTypeColumn),
            ("pg_class", "r", false, true, Kind::RowTypeColumn),
            ("pg_constraint", "p", false, false, Kind::PrimaryKey),
            ("pg_constraint", "u", false, false, Kind::Unique),
            ("pg_constraint", "x", false, false, Kind::Exclusion),
            ("pg_constraint", "t", false, false, Kind::ConstraintTrigger),
            ("pg_constraint", "c", false, false, Kind::Check),
            (
                "pg_constraint",
                "c+notvalid",
                false,
                false,
                Kind::NotValidCheck,
            ),
            (
                "pg_constraint",
                "c+noinherit+notvalid",
                false,
                false,
                Kind::NoInheritCheck,
            ),
            ("pg_constraint", "f", false, false, Kind::OutboundForeignKey),
            (
                "pg_constraint",
                "f+notvalid",
                false,
                false,
                Kind::OutboundForeignKey,
            ),
            (
                "pg_constraint",
                "f+inbound",
                false,
                false,
                Kind::InboundForeignKey,
            ),
            (
                "pg_constraint",
                "f+self",
                false,
                false,
                Kind::SelfForeignKey,
            ),
            ("pg_rewrite", "rule", false, false, Kind::Rule),
            ("pg_rewrite", "v", false, false, Kind::View),
            ("pg_rewrite", "m", false, false, Kind::MaterializedView),
            ("pg_trigger", "row", false, false, Kind::Trigger),
            ("pg_trigger", "statement", false, false, Kind::Trigger),
            (
                "pg_trigger",
                "constraint",
                false,
                false,
                Kind::ConstraintTrigger,
            ),
            (
                "pg_trigger",
                "transition",
                false,
                false,
                Kind::TransitionTrigger,
            ),
            ("pg_trigger", "internal", false, false, Kind::Internal),
            ("pg_publication_rel", "", false, false, Kind::Publication),
            (
                "pg_publication_rel",
                "own",
                false,
                false,
                Kind::OwnPublication,
            ),
            (
                "pg_publication_rel",
                "filtered",
                false,
                false,
                Kind::FilteredPublication,
            ),
            ("pg_proc", "", true, false, Kind::Function),
            ("pg_type", "", false, false, Kind::RowType),
            ("pg_attrdef", "", false, false, Kind::Default),
            ("pg_policy", "", false, false, Kind::Policy),
            (
                "pg_statistic_ext",
                "",
                false,
                false,
                Kind::ExtendedStatistics,
            ),
            ("pg_class", "v", false, false, Kind::Unknown),
            ("pg_constraint", "n", false, false, Kind::NotNull),
            ("pg_constraint", "z", false, false, Kind::Unknown),
            ("pg_event_trigger", "", false, false, Kind::Unknown),
        ];
        for (catalog, detail, via_type, column, want) in cases {
            assert_eq!(
                classify(catalog, detail, via_type, column),
                want,
                "{catalog} {detail:?}"
            );
        }
    }

    #[test]
    fn an_unknown_dependent_is_reported_not_carried() {
        assert_eq!(Kind::Unknown.fate(false).0, Fate::NotCarried);
        assert_eq!(Kind::Unknown.fate(true).0, Fate::NotCarried);
        assert_eq!(Kind::Rule.fate(false).0, Fate::Refused);
    }

    #[test]
    fn the_carry_over_doc_holds_the_catalogue() {
        let doc = include_str!("../../docs/carry-over.md");
        let want = catalogue_markdown();
        assert_eq!(
            between_markers(doc, "dependents catalogue"),
            Some(want.as_str()),
            "docs/carry-over.md must hold, between `<!-- begin dependents catalogue -->` and `<!-- end dependents catalogue -->`:\n{want}"
        );
    }

    #[test]
    fn the_readme_lists_the_catalogue() {
        let doc = include_str!("../../README.md");
        let want = readme_markdown();
        assert_eq!(
            between_markers(doc, "dependents summary"),
            Some(want.as_str()),
            "README.md must hold, between `<!-- begin dependents summary -->` and `<!-- end dependents summary -->`:\n{want}"
        );
    }

    #[test]
    fn lines_put_what_needs_the_dba_first() {
        let d = |kind: Kind, object: &str| {
            let (fate, how) = kind.fate(false);
            Dependent {
                kind,
                object: object.into(),
                fate,
                how: how.into(),
                id: None,
            }
        };
        let out = lines(&[
            d(Kind::Index, "index a"),
            d(Kind::ExtendedStatistics, "statistics object s"),
            d(Kind::Rule, "rule r on table t"),
        ]);
        assert!(
            out[0].starts_with("REFUSED     rule r on table t: "),
            "{out:?}"
        );
        assert!(out[1].starts_with("NOT carried statistics object s: "));
        assert!(out[2].starts_with("rebuilt     index a: "));
    }
}
