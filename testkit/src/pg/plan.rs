//! Query plans, for tests that pin how PostgreSQL runs a statement (e.g. that a merge probes
//! an index instead of scanning the table it checks against).

use sqlx::Row as _;

/// One node of a plan: its type (`Seq Scan`, `Index Scan`, `Hash Anti Join`, ...) and the
/// relation it reads, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanNode {
    pub node_type: String,
    pub relation: Option<String>,
}

/// Every node of `EXPLAIN (FORMAT JSON) sql`, sub-plans included, depth first. `sql` is
/// planned, not run (its parameters, if any, must be given inline).
pub async fn plan_nodes(
    conn: &mut sqlx::PgConnection,
    sql: &str,
) -> Result<Vec<PlanNode>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {sql}")))
        .fetch_one(&mut *conn)
        .await?;
    let plan: serde_json::Value = row.try_get(0)?;
    let mut out = Vec::new();
    if let Some(top) = plan.get(0).and_then(|p| p.get("Plan")) {
        walk(top, &mut out);
    }
    Ok(out)
}

fn walk(node: &serde_json::Value, out: &mut Vec<PlanNode>) {
    out.push(PlanNode {
        node_type: node["Node Type"].as_str().unwrap_or_default().to_owned(),
        relation: node["Relation Name"].as_str().map(str::to_owned),
    });
    if let Some(children) = node["Plans"].as_array() {
        for c in children {
            walk(c, out);
        }
    }
}

/// Asserts that a merge's plan reads `staging` by its one sequential scan and checks each row
/// against a partition of `target` (`{target}_...`) by an index probe, with no join: the merge
/// costs the batch, not the table. Panics with the whole plan otherwise.
pub fn assert_probes_by_index(nodes: &[PlanNode], staging: &str, target: &str) {
    let scanned: Vec<&str> = nodes
        .iter()
        .filter(|n| n.node_type == "Seq Scan")
        .filter_map(|n| n.relation.as_deref())
        .collect();
    assert_eq!(scanned, [staging], "only staging is scanned: {nodes:#?}");
    let partition = format!("{target}_");
    assert!(
        nodes.iter().any(|n| n.node_type.contains("Index Scan")
            && n.relation
                .as_deref()
                .is_some_and(|r| r.starts_with(&partition))),
        "{target} is probed by an index: {nodes:#?}"
    );
    assert!(
        !nodes.iter().any(|n| n.node_type.contains("Join")),
        "no join: {nodes:#?}"
    );
}
