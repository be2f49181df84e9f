//! Lifecycle identity (and that of messages of types this build does not model, and of the
//! exchange's status and schedule, which have no id either: `unknown_messages` and `exchange`,
//! the same rule over their own tables; a status comes back to "trading active" after every
//! halt). A lifecycle message has no id and no exchange time, and a market paused
//! twice publishes two identical messages. A gatherer's count of identical messages starts
//! again with every new database, so after every gatherer was replaced a new pause would get an
//! old pause's key and be dropped. The identity is decided here, against production:
//!
//! - a message is `(ticker, event_type, content_hash)`, the hash over every field the exchange
//!   sent (kept as sent by the gatherers), plus an `occurrence` that production assigns;
//! - a copy merged before is skipped, known by its gatherer, its database (the instance before
//!   any `~` incarnation suffix: a database gone back and read again under a new incarnation
//!   holds the same copies), its content and its receipt time, whatever its cursor;
//! - otherwise it is the identical row received within `sink.lifecycle_match_window` of it
//!   that has no copy from the same gatherer yet, the nearest in time: one gatherer receives a
//!   message once, whichever of its instances (a new instance never receives an old message);
//! - otherwise it is a new message: the next occurrence of its content.
//!
//! The exchange's states (`exchange`) are polled again and again, and a gatherer with a new
//! database sees the current state again: there, before the rule, a copy whose content is the
//! state production has at its time (the newest row of its object at or before it) is that
//! state (a return always follows another state).
//!
//! Each content ends up with as many rows as the gatherer that received it most often has
//! copies: exact whenever one gatherer saw every one of them, as for deltas. `lifecycle_copies`
//! records which copy became which row, in the same transaction, so the rule holds across
//! restarts of the deduplicator and of every gatherer.
//!
//! It must never merge two copies one gatherer received, nor make two rows of the copies
//! different gatherers received within the window.

use std::collections::{HashMap, HashSet};

use kalshi_proto::gatherer::v1 as pb;
use sqlx::Row as _;

use super::Row;

/// `(ticker, event_type, content_hash)`.
pub(super) type Content = (String, String, String);

/// A production row of one content.
#[derive(Debug, Clone)]
pub(super) struct Known {
    pub occurrence: i64,
    pub received_ms: i64,
    /// Gatherers with a copy in it.
    pub sources: HashSet<String>,
}

/// A copy to place.
#[derive(Debug, Clone)]
pub(super) struct Copy {
    pub content: Content,
    pub received_ms: i64,
    /// Its gatherer.
    pub source: String,
}

/// A database's instance id without the incarnation a deduplicator gave it after it went back.
fn base_instance(instance: &str) -> &str {
    instance.split('~').next().unwrap_or(instance)
}

/// Where each copy goes: `(occurrence, new row)`, in the order given.
pub(super) fn assign(
    known: &mut HashMap<Content, Vec<Known>>,
    copies: &[Copy],
    window_ms: i64,
) -> Vec<(i64, bool)> {
    let mut order: Vec<usize> = (0..copies.len()).collect();
    order.sort_by_key(|i| copies[*i].received_ms);
    let mut out = vec![(0, false); copies.len()];
    for i in order {
        let c = &copies[i];
        let rows = known.entry(c.content.clone()).or_default();
        let nearest = rows
            .iter_mut()
            .filter(|k| {
                (k.received_ms - c.received_ms).abs() <= window_ms && !k.sources.contains(&c.source)
            })
            .min_by_key(|k| ((k.received_ms - c.received_ms).abs(), k.occurrence));
        out[i] = match nearest {
            Some(k) => {
                k.sources.insert(c.source.clone());
                (k.occurrence, false)
            }
            None => {
                let occurrence = rows.iter().map(|k| k.occurrence + 1).max().unwrap_or(0);
                rows.push(Known {
                    occurrence,
                    received_ms: c.received_ms,
                    sources: HashSet::from([c.source.clone()]),
                });
                (occurrence, true)
            }
        };
    }
    out
}

/// A table whose rows have no id and take this identity: lifecycle messages, and messages of
/// types this build does not model (`unknown_messages`), with their copies tables.
pub(super) struct Table {
    pub table: &'static str,
    pub copies: &'static str,
    /// The columns of `(ticker, event_type)` and of the unkeyed `kind`.
    pub ticker: &'static str,
    pub event_type: &'static str,
    pub kind: &'static str,
    /// Rows are states polled again and again (the exchange's): a copy of the state in force
    /// at its time is that state.
    pub continues: bool,
}

pub(super) const LIFECYCLE: Table = Table {
    table: "lifecycle",
    copies: "lifecycle_copies",
    ticker: "ticker",
    event_type: "event_type",
    kind: "kind",
    continues: false,
};

pub(super) const UNKNOWN: Table = Table {
    table: "unknown_messages",
    copies: "unknown_message_copies",
    ticker: "market_ticker",
    event_type: "type",
    kind: "channel",
    continues: false,
};

/// The exchange's status and schedule: `ticker` the object, `endpoint` its REST path,
/// `received_ms` when the gatherer polled it.
pub(super) const EXCHANGE: Table = Table {
    table: "exchange",
    copies: "exchange_copies",
    ticker: "ticker",
    event_type: "endpoint",
    kind: "source",
    continues: true,
};

/// The identity table of a stream whose records have no id (`None`: the others).
pub(super) fn table_of(stream: kalshi_proto::Stream) -> Option<&'static Table> {
    use kalshi_proto::Stream;
    match stream {
        Stream::Lifecycle => Some(&LIFECYCLE),
        Stream::UnknownMessages => Some(&UNKNOWN),
        Stream::Exchange => Some(&EXCHANGE),
        _ => None,
    }
}

/// A message of any of the tables, borrowed from its record.
struct Msg<'a> {
    ticker: &'a str,
    event_type: &'a str,
    kind: &'a str,
    body: &'a str,
    hash: std::borrow::Cow<'a, str>,
    received_ms: i64,
}

fn msg(r: &pb::Record) -> Option<Msg<'_>> {
    use pb::record::Body;
    match r.body.as_ref()? {
        Body::Lifecycle(l) => Some(Msg {
            ticker: &l.ticker,
            event_type: &l.event_type,
            kind: &l.kind,
            body: &l.body_json,
            hash: l.content_hash.as_str().into(),
            received_ms: l.origin.as_ref().map_or(0, |o| o.received_ms),
        }),
        Body::Unknown(u) => Some(Msg {
            ticker: &u.market_ticker,
            event_type: &u.r#type,
            kind: &u.channel,
            body: &u.body_json,
            hash: u.content_hash.as_str().into(),
            received_ms: u.origin.as_ref().map_or(0, |o| o.received_ms),
        }),
        // The exchange's versions: their content is the body's (the gatherers' hash).
        Body::Registry(v) if v.kind == "exchange" => Some(Msg {
            ticker: &v.ticker,
            event_type: crate::records::exchange_endpoint(&v.ticker),
            kind: crate::records::EXCHANGE_SOURCE,
            body: &v.body_json,
            hash: kalshi_shared::identity::json_hash(&v.body_json)
                .unwrap_or_default()
                .into(),
            received_ms: v.observed_ms,
        }),
        _ => None,
    }
}

/// Merges the rows of `t` in the current transaction; returns the rows inserted.
pub(super) async fn merge(
    conn: &mut sqlx::PgConnection,
    t: &Table,
    rows: &[&Row],
    gatherers: &[String],
    window_ms: i64,
) -> Result<u64, sqlx::Error> {
    struct In<'a> {
        l: Msg<'a>,
        gatherer: &'a str,
        instance: &'a str,
    }
    let ins: Vec<In<'_>> = rows
        .iter()
        .filter_map(|r| {
            Some(In {
                l: msg(&r.record)?,
                gatherer: gatherers.get(r.gatherer).map_or("", String::as_str),
                instance: &r.instance,
            })
        })
        .collect();
    if ins.is_empty() {
        return Ok(0);
    }
    let (ticker, event_type) = (t.ticker, t.event_type);
    // Copies merged before (a gatherer read again, a database gone back): skipped.
    let mut cols: [Vec<String>; 5] = Default::default();
    let mut received = Vec::with_capacity(ins.len());
    for x in &ins {
        cols[0].push(x.gatherer.to_owned());
        cols[1].push(base_instance(x.instance).to_owned());
        cols[2].push(x.l.ticker.to_owned());
        cols[3].push(x.l.event_type.to_owned());
        cols[4].push(x.l.hash.to_string());
        received.push(x.l.received_ms);
    }
    type CopyKey = (String, String, String, String, String, i64);
    let merged: HashSet<CopyKey> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT gatherer_id, instance_id, {ticker}, {event_type}, content_hash, received_ms FROM {copies} \
         WHERE (gatherer_id, instance_id, {ticker}, {event_type}, content_hash, received_ms) IN \
           (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[]))",
        copies = t.copies
    )))
    .bind(&cols[0])
    .bind(&cols[1])
    .bind(&cols[2])
    .bind(&cols[3])
    .bind(&cols[4])
    .bind(&received)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get(0)?,
            r.try_get(1)?,
            r.try_get(2)?,
            r.try_get(3)?,
            r.try_get(4)?,
            r.try_get(5)?,
        ))
    })
    .collect::<Result<_, sqlx::Error>>()?;
    let ins: Vec<In<'_>> = ins
        .into_iter()
        .filter(|x| {
            !merged.contains(&(
                x.gatherer.to_owned(),
                base_instance(x.instance).to_owned(),
                x.l.ticker.to_owned(),
                x.l.event_type.to_owned(),
                x.l.hash.to_string(),
                x.l.received_ms,
            ))
        })
        .collect();
    if ins.is_empty() {
        return Ok(0);
    }
    let content_of = |x: &In<'_>| -> Content {
        (
            x.l.ticker.to_owned(),
            x.l.event_type.to_owned(),
            x.l.hash.to_string(),
        )
    };
    // The rows of the same contents, locked, and their copies.
    let mut contents: Vec<Content> = ins.iter().map(content_of).collect();
    contents.sort();
    contents.dedup();
    let (tk, e, h): (Vec<&str>, Vec<&str>, Vec<&str>) =
        contents
            .iter()
            .fold((vec![], vec![], vec![]), |mut a, (t, e, h)| {
                a.0.push(t.as_str());
                a.1.push(e.as_str());
                a.2.push(h.as_str());
                a
            });
    let mut known: HashMap<Content, Vec<Known>> = HashMap::new();
    for r in sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ticker}, {event_type}, content_hash, occurrence, received_ms FROM {table} \
         WHERE ({ticker}, {event_type}, content_hash) IN (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])) \
         FOR UPDATE",
        table = t.table
    )))
    .bind(&tk)
    .bind(&e)
    .bind(&h)
    .fetch_all(&mut *conn)
    .await?
    {
        known
            .entry((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
            .or_default()
            .push(Known {
                occurrence: r.try_get(3)?,
                received_ms: r.try_get(4)?,
                sources: HashSet::new(),
            });
    }
    for r in sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ticker}, {event_type}, content_hash, occurrence, gatherer_id FROM {copies} \
         WHERE ({ticker}, {event_type}, content_hash) IN (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]))",
        copies = t.copies
    )))
    .bind(&tk)
    .bind(&e)
    .bind(&h)
    .fetch_all(&mut *conn)
    .await?
    {
        let content: Content = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let occurrence: i64 = r.try_get(3)?;
        if let Some(k) = known
            .get_mut(&content)
            .and_then(|v| v.iter_mut().find(|k| k.occurrence == occurrence))
        {
            k.sources.insert(r.try_get(4)?);
        }
    }
    let copies: Vec<Copy> = ins
        .iter()
        .map(|x| Copy {
            content: content_of(x),
            received_ms: x.l.received_ms,
            source: x.gatherer.to_owned(),
        })
        .collect();
    let continued = if t.continues {
        continuations(conn, t, &ins.iter().map(|x| &x.l).collect::<Vec<_>>()).await?
    } else {
        vec![None; ins.len()]
    };
    // A copy that continues a row is that row's copy from its gatherer: a return to the same
    // content the same gatherer saw later in the batch is another row, never this one (one
    // gatherer whose first copy continued the state, then a halt, then active again, had that
    // return joined to the first row: the state was lost).
    for (c, occ) in copies.iter().zip(&continued) {
        if let Some(occ) = occ
            && let Some(k) = known
                .get_mut(&c.content)
                .and_then(|v| v.iter_mut().find(|k| k.occurrence == *occ))
        {
            k.sources.insert(c.source.clone());
        }
    }
    let rest: Vec<usize> = (0..ins.len()).filter(|i| continued[*i].is_none()).collect();
    let rest_copies: Vec<Copy> = rest.iter().map(|i| copies[*i].clone()).collect();
    let mut placed: Vec<(i64, bool)> = continued.iter().map(|c| (c.unwrap_or(0), false)).collect();
    for (k, p) in rest
        .into_iter()
        .zip(assign(&mut known, &rest_copies, window_ms))
    {
        placed[k] = p;
    }
    // New rows, and every copy's place.
    let mut new = NewRows::default();
    let mut links = NewRows::default();
    for ((x, c), (occurrence, is_new)) in ins.iter().zip(&copies).zip(&placed) {
        if *is_new {
            new.push(&x.l, *occurrence, c.received_ms, x.gatherer, x.instance);
        }
        links.push(
            &x.l,
            *occurrence,
            c.received_ms,
            x.gatherer,
            base_instance(x.instance),
        );
    }
    let inserted = if new.ticker.is_empty() {
        0
    } else {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} ({ticker}, {event_type}, content_hash, occurrence, {kind}, body, received_ms, gatherer_id) \
             SELECT t, e, h, o, k, b::json, r, g FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::bigint[], $8::text[]) \
               AS u(t, e, h, o, k, b, r, g) \
             ON CONFLICT ({ticker}, {event_type}, content_hash, occurrence) DO NOTHING",
            table = t.table,
            kind = t.kind
        )))
        .bind(&new.ticker)
        .bind(&new.event_type)
        .bind(&new.hash)
        .bind(&new.occurrence)
        .bind(&new.kind)
        .bind(&new.body)
        .bind(&new.received)
        .bind(&new.gatherer)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {copies} (gatherer_id, instance_id, received_ms, {ticker}, {event_type}, content_hash, occurrence) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[]) \
         ON CONFLICT DO NOTHING",
        copies = t.copies
    )))
    .bind(&links.gatherer)
    .bind(&links.instance)
    .bind(&links.received)
    .bind(&links.ticker)
    .bind(&links.event_type)
    .bind(&links.hash)
    .bind(&links.occurrence)
    .execute(&mut *conn)
    .await?;
    Ok(inserted)
}

/// For states polled again and again (the exchange's, `Table::continues`): per copy, the
/// occurrence of the state it continues, if any. A state is seen again by every poll, and by a
/// gatherer with a new database after it: a copy whose content is the state in force at its
/// time is that state, not a return to it (a return always follows another state). The state
/// in force is the newest copy before it in the batch when that is newer than production's
/// newest row at or before it; else that row.
async fn continuations(
    conn: &mut sqlx::PgConnection,
    t: &Table,
    msgs: &[&Msg<'_>],
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    let mut continued: Vec<Option<i64>> = vec![None; msgs.len()];
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by_key(|i| msgs[*i].received_ms);
    let (ticker, event_type) = (t.ticker, t.event_type);
    for (n, &i) in order.iter().enumerate() {
        let x = msgs[i];
        let row: Option<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT content_hash, occurrence, received_ms FROM {table} WHERE {ticker} = $1 \
             AND {event_type} = $2 AND received_ms <= $3 \
             ORDER BY received_ms DESC, occurrence DESC LIMIT 1",
            table = t.table
        )))
        .bind(x.ticker)
        .bind(x.event_type)
        .bind(x.received_ms)
        .fetch_optional(&mut *conn)
        .await?;
        let since = row.as_ref().map_or(i64::MIN, |r| r.2);
        let before = order[..n].iter().rev().copied().find(|&j| {
            let y = msgs[j];
            y.ticker == x.ticker && y.event_type == x.event_type && y.received_ms > since
        });
        continued[i] = match before {
            Some(j) if msgs[j].hash == x.hash => continued[j],
            Some(_) => None,
            None => row
                .and_then(|(hash, occurrence, _)| (hash == x.hash.as_ref()).then_some(occurrence)),
        };
    }
    Ok(continued)
}

#[derive(Default)]
struct NewRows {
    ticker: Vec<String>,
    event_type: Vec<String>,
    hash: Vec<String>,
    occurrence: Vec<i64>,
    kind: Vec<String>,
    body: Vec<String>,
    received: Vec<i64>,
    gatherer: Vec<String>,
    instance: Vec<String>,
}

impl NewRows {
    fn push(
        &mut self,
        l: &Msg<'_>,
        occurrence: i64,
        received: i64,
        gatherer: &str,
        instance: &str,
    ) {
        self.ticker.push(l.ticker.to_owned());
        self.event_type.push(l.event_type.to_owned());
        self.hash.push(l.hash.to_string());
        self.occurrence.push(occurrence);
        self.kind.push(l.kind.to_owned());
        self.body.push(l.body.to_owned());
        self.received.push(received);
        self.gatherer.push(gatherer.to_owned());
        self.instance.push(instance.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(t: i64, g: &str) -> Copy {
        Copy {
            content: ("M".into(), "deactivated".into(), "h".into()),
            received_ms: t,
            source: g.into(),
        }
    }

    #[test]
    fn copies_of_one_message_are_one_row_and_identical_messages_are_two() {
        let mut known = HashMap::new();
        // A pause seen by three gatherers within a few ms, then the same pause again a minute
        // later, seen by two.
        let copies = [
            copy(1_000, "g1"),
            copy(1_004, "g2"),
            copy(1_002, "g3"),
            copy(61_000, "g2"),
            copy(61_001, "g1"),
        ];
        let placed = assign(&mut known, &copies, 10_000);
        assert_eq!(
            placed,
            vec![(0, true), (0, false), (0, false), (1, true), (1, false)]
        );
    }

    #[test]
    fn one_gatherer_receiving_it_twice_within_the_window_is_two_messages() {
        let mut known = HashMap::new();
        // Paused, resumed, paused within a second: g1 receives both pauses, g2 only the
        // second (it was reconnecting during the first).
        let copies = [copy(1_000, "g1"), copy(1_900, "g1"), copy(1_901, "g2")];
        let placed = assign(&mut known, &copies, 10_000);
        assert_eq!(placed, vec![(0, true), (1, true), (1, false)]);
    }

    #[test]
    fn every_gatherer_replaced_a_new_pause_is_a_new_row_even_within_the_window() {
        // Production knows the first pause (occurrence 0, copies from g1 and g2, whose databases
        // are gone); the new instances' copies of an identical pause seconds later are a new
        // message: g1 and g2 already have a copy in the old row.
        let mut known = HashMap::from([(
            ("M".to_owned(), "deactivated".to_owned(), "h".to_owned()),
            vec![Known {
                occurrence: 0,
                received_ms: 1_000,
                sources: HashSet::from(["g1".to_owned(), "g2".to_owned()]),
            }],
        )]);
        let copies = [copy(4_000, "g1"), copy(4_003, "g2")];
        assert_eq!(
            assign(&mut known, &copies, 10_000),
            vec![(1, true), (1, false)]
        );
    }

    #[test]
    fn a_gatherer_that_missed_the_first_still_makes_the_count_exact() {
        // g3 was down for pause A; its copy of A' (identical, within the window) is placed
        // first and joins A; g1's and g2's copies of A' then make A'. Two rows, as published.
        let mut known = HashMap::from([(
            ("M".to_owned(), "deactivated".to_owned(), "h".to_owned()),
            vec![Known {
                occurrence: 0,
                received_ms: 1_000,
                sources: HashSet::from(["g1".to_owned(), "g2".to_owned()]),
            }],
        )]);
        let placed = assign(&mut known, &[copy(5_000, "g3")], 10_000);
        assert_eq!(placed, vec![(0, false)]);
        let placed = assign(&mut known, &[copy(5_001, "g1"), copy(5_002, "g2")], 10_000);
        assert_eq!(placed, vec![(1, true), (1, false)]);
        assert_eq!(known.values().next().map(Vec::len), Some(2));
    }

    #[test]
    fn incarnations_share_their_database() {
        assert_eq!(base_instance("uuid-1"), "uuid-1");
        assert_eq!(base_instance("uuid-1~1796000000000"), "uuid-1");
    }
}
