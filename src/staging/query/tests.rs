use rusqlite::Connection;

use super::*;

/// A migrated staging database with `n` users of tenant 1 (and a few of tenant 2 and groups around them):
/// every third user has no displayName, every fifth no externalId, lastModified shuffled.
fn db(n: usize) -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let conn = crate::staging::open_migrated(&path).unwrap();
    conn.execute_batch("INSERT INTO tenants (id, name, created) VALUES (1, 'a', ''), (2, 'b', '');").unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut ins = tx
            .prepare(
                "INSERT INTO resources (tenant_id, kind, id, name_key, display_key, external_id, display, body, version, created, last_modified)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '{}', 1, '', ?8)",
            )
            .unwrap();
        let mut email =
            tx.prepare("INSERT INTO resource_emails (resource_seq, tenant_id, email) VALUES (?1, ?2, ?3)").unwrap();
        for i in 0..n {
            let (tenant, kind) = match i % 50 {
                7 => (2, "User"),
                9 => (1, "Group"),
                _ => (1, "User"),
            };
            // Names in an order unlike creation order, with repeats of display names.
            let name = format!("u{:05}@example.com", (i * 7919) % 100_000);
            let display = (i % 3 != 0).then(|| format!("name {:03}", (i * 31) % 400));
            let external = (i % 5 != 0).then(|| format!("E{:06}", (i * 104_729) % 1_000_000));
            let modified = format!("2026-01-01T00:00:{:06}", (i * 6151) % 100_000);
            ins.execute(rusqlite::params![tenant, kind, format!("id{i}"), name, display, external, display, modified])
                .unwrap();
            email.execute(rusqlite::params![tx.last_insert_rowid(), tenant, name]).unwrap();
        }
    }
    tx.commit().unwrap();
    (dir, conn)
}

fn all_sorts() -> Vec<Sort> {
    let mut out = Vec::new();
    for key in [SortKey::Created, SortKey::Name, SortKey::Display, SortKey::ExternalId, SortKey::LastModified] {
        for descending in [false, true] {
            out.push(Sort { key, descending });
        }
    }
    out
}

/// Pages found from position marks are exactly the pages of a plain ORDER BY … OFFSET, in every order,
/// at every kind of position (in the NULL group, across its edge, at the end).
#[test]
fn pages_from_marks_match_plain_offsets() {
    let (_dir, conn) = db(6000);
    let t = TenantId(1);
    for sort in all_sorts() {
        let marks = take_marks(&conn, t, Kind::User, sort).unwrap();
        let total: usize = conn
            .query_row("SELECT COUNT(*) FROM resources WHERE tenant_id = 1 AND kind = 'User'", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap() as usize;
        assert_eq!(marks.len(), total.div_ceil(STRIDE), "{sort:?}");
        let mut positions: Vec<usize> = (0..total).step_by(397).collect();
        positions.extend([STRIDE - 1, STRIDE, 2 * STRIDE + 5, total - 3, total - 1, total]);
        for p in positions {
            let plain = page_seqs(&conn, t, Kind::User, sort, None, p, 7).unwrap();
            let i = (p / STRIDE).min(marks.len() - 1);
            let from = page_seqs(&conn, t, Kind::User, sort, Some(&marks[i]), p - i * STRIDE, 7).unwrap();
            assert_eq!(from, plain, "{sort:?} at position {p}");
        }
    }
}

#[test]
fn sort_orders_follow_rfc_7644() {
    let (_dir, conn) = db(300);
    let t = TenantId(1);
    let display = |desc: bool| -> Vec<Option<String>> {
        let seqs =
            page_seqs(&conn, t, Kind::User, Sort { key: SortKey::Display, descending: desc }, None, 0, 1000).unwrap();
        seqs.iter()
            .map(|s| conn.query_row("SELECT display_key FROM resources WHERE seq = ?1", [s], |r| r.get(0)).unwrap())
            .collect()
    };
    let asc = display(false);
    let first_null = asc.iter().position(Option::is_none).unwrap();
    assert!(asc[first_null..].iter().all(Option::is_none), "missing values last when ascending");
    assert!(asc[..first_null].windows(2).all(|w| w[0] <= w[1]));
    let desc = display(true);
    let last_null = desc.iter().rposition(Option::is_none).unwrap();
    assert!(desc[..=last_null].iter().all(Option::is_none), "missing values first when descending");
    assert!(desc[last_null + 1..].windows(2).all(|w| w[0] >= w[1]));
}

fn plan_of(conn: &Connection, sql: &str) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let n = stmt.column_count();
    let params = stmt.parameter_count();
    let rows: Vec<String> = stmt
        .query_map(rusqlite::params_from_iter((0..params).map(|_| rusqlite::types::Value::Null)), |r| {
            r.get::<_, String>(n - 1)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.join(" / ")
}

/// No list shape scans the resources table or sorts in a temporary B-tree: each is an index search whose
/// cost follows the page or the matches.
#[test]
fn every_list_shape_is_an_index_search() {
    let (_dir, conn) = db(500);
    conn.execute_batch("ANALYZE").unwrap();
    let mut shapes: Vec<String> = Vec::new();
    for sort in all_sorts() {
        shapes.push(format!(
            "SELECT {}, seq FROM resources WHERE tenant_id = ?1 AND kind = ?2 ORDER BY {}",
            sort.select_key(),
            sort.order_by()
        ));
        let order = sort.order_by();
        let cmp = if sort.descending { "<=" } else { ">=" };
        let base = "SELECT seq FROM resources WHERE tenant_id = ?1 AND kind = ?2";
        shapes.push(format!("{base} ORDER BY {order} LIMIT ?3 OFFSET ?4"));
        match sort.column() {
            None => shapes.push(format!("{base} AND seq {cmp} ?5 ORDER BY {order} LIMIT ?3 OFFSET ?4")),
            Some(c) => {
                shapes.push(format!("{base} AND {c} IS NULL AND seq {cmp} ?5 ORDER BY {order} LIMIT ?3 OFFSET ?4"));
                shapes.push(format!("{base} AND {c} IS NOT NULL ORDER BY {order} LIMIT ?3 OFFSET ?4"));
                shapes.push(format!(
                    "{base} AND {c} IS NOT NULL AND ({c}, seq) {cmp} (?5, ?6) ORDER BY {order} LIMIT ?3 OFFSET ?4"
                ));
            }
        }
    }
    for l in [
        Lookup::Eq(Column::Id, "x".into()),
        Lookup::Eq(Column::Name, "x".into()),
        Lookup::Eq(Column::Display, "x".into()),
        Lookup::Eq(Column::ExternalId, "x".into()),
        Lookup::Eq(Column::Email, "x".into()),
        Lookup::Sw(Column::Name, "x".into()),
        Lookup::Sw(Column::Email, "x".into()),
        Lookup::Co(Column::Name, "x".into()),
        Lookup::Co(Column::Display, "x".into()),
        Lookup::Co(Column::Email, "x".into()),
        Lookup::Ew(Column::Name, "x".into()),
        Lookup::Present(Column::ExternalId),
        Lookup::Present(Column::Email),
    ] {
        shapes.push(lookup_sql(&l).0);
    }
    shapes.push("SELECT count FROM resource_counts WHERE tenant_id = ?1 AND kind = ?2".into());
    shapes.push("SELECT seq, id, body, version, created, last_modified FROM resources WHERE seq = ?1".into());
    shapes.push(
        "SELECT seq, id, body, version, created, last_modified FROM resources WHERE tenant_id = ?1 AND kind = ?2 ORDER BY seq"
            .into(),
    );
    for sql in shapes {
        let plan = plan_of(&conn, &sql);
        assert!(
            !plan.contains("SCAN resources") && !plan.contains("SCAN r ") && !plan.contains("SCAN e"),
            "{sql}\n  => {plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{sql}\n  => {plan}");
        assert!(plan.contains("SEARCH"), "{sql}\n  => {plan}");
    }
}

#[test]
fn plans() {
    let p = |kind: Kind, s: &str| plan(kind, &crate::scim::filter::parse_filter(s).unwrap());
    let exact = |lookups: Vec<Lookup>| Some(Plan { lookups, exact: true });
    assert_eq!(p(Kind::User, "userName eq \"A@X.com\""), exact(vec![Lookup::Eq(Column::Name, "a@x.com".into())]));
    assert_eq!(p(Kind::User, "USERNAME EQ \"a\""), exact(vec![Lookup::Eq(Column::Name, "a".into())]));
    assert_eq!(p(Kind::User, "externalId eq jyoung"), exact(vec![Lookup::Eq(Column::ExternalId, "jyoung".into())]));
    assert_eq!(p(Kind::User, "externalId eq 12345"), exact(vec![Lookup::Eq(Column::ExternalId, "12345".into())]));
    assert_eq!(p(Kind::User, "emails.value eq \"A@x\""), exact(vec![Lookup::Eq(Column::Email, "a@x".into())]));
    assert_eq!(
        p(Kind::User, "emails[type eq \"work\"].value eq \"A@x\""),
        Some(Plan { lookups: vec![Lookup::Eq(Column::Email, "a@x".into())], exact: false })
    );
    assert_eq!(p(Kind::Group, "displayName eq \"Sales\""), exact(vec![Lookup::Eq(Column::Name, "sales".into())]));
    assert_eq!(p(Kind::User, "userName co \"Ann\""), exact(vec![Lookup::Co(Column::Name, "ann".into())]));
    assert_eq!(p(Kind::User, "displayName sw \"Ann\""), exact(vec![Lookup::Sw(Column::Display, "ann".into())]));
    assert_eq!(p(Kind::User, "emails ew \"@X.com\""), exact(vec![Lookup::Ew(Column::Email, "@x.com".into())]));
    assert_eq!(p(Kind::User, "externalId pr"), exact(vec![Lookup::Present(Column::ExternalId)]));
    assert_eq!(
        p(Kind::User, "userName eq \"a\" or externalId eq \"b\""),
        exact(vec![Lookup::Eq(Column::Name, "a".into()), Lookup::Eq(Column::ExternalId, "b".into())])
    );
    assert_eq!(
        p(Kind::User, "userName co \"x\" and externalId eq \"b\""),
        Some(Plan { lookups: vec![Lookup::Eq(Column::ExternalId, "b".into())], exact: false }),
        "the narrower side answers"
    );
    assert_eq!(p(Kind::User, "title eq \"x\""), None);
    assert_eq!(p(Kind::User, "userName eq \"a\" or title eq \"x\""), None);
    assert_eq!(p(Kind::User, "not (userName eq \"a\")"), None);
    assert_eq!(p(Kind::User, "userName gt \"a\""), None);
}

#[test]
fn lookups_find_what_they_say() {
    let (_dir, conn) = db(400);
    let t = TenantId(1);
    let find = |l: Lookup| candidates(&conn, t, Kind::User, &Plan { lookups: vec![l], exact: true }).unwrap();
    let names = |seqs: Vec<i64>| -> Vec<String> {
        seqs.iter()
            .map(|s| conn.query_row("SELECT name_key FROM resources WHERE seq = ?1", [s], |r| r.get(0)).unwrap())
            .collect()
    };
    let name = names(find(Lookup::Eq(Column::Name, "u07919@example.com".into())));
    assert_eq!(name, ["u07919@example.com"]);
    for n in names(find(Lookup::Sw(Column::Name, "u0791".into()))) {
        assert!(n.starts_with("u0791"), "{n}");
    }
    for n in names(find(Lookup::Co(Column::Email, "919@".into()))) {
        assert!(n.contains("919@"), "{n}");
    }
    let ends = names(find(Lookup::Ew(Column::Name, "9@example.com".into())));
    assert!(!ends.is_empty() && ends.iter().all(|n| n.ends_with("9@example.com")), "{ends:?}");
    assert!(find(Lookup::Ew(Column::Name, "a-suffix-longer-than-any-name@example.com".into())).is_empty());
    assert_eq!(prefix_end("ab"), Some("ac".into()));
    assert_eq!(prefix_end("a\u{10FFFF}"), Some("b".into()));
}
