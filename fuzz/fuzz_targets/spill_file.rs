//! A spill file (`<spill_dir>/<instance>/<table>-<ms>-<first_id>.copy`: a binary COPY payload
//! the gatherer wrote when its database was down) as the replay reads it back: the cursors it
//! holds, the rows kept after a partial load, renumbered onto fresh ids. A damaged file is an
//! error (the replay sets it aside), never a panic; what `keep_rows` and `renumber` return
//! parses again with the same rows.
#![no_main]

use gatherer::store::spill;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ids) = spill::cursors(data) else {
        return;
    };
    let kept = spill::keep_rows(data, |id| id % 2 == 0).expect("a payload that parsed filters");
    let kept_ids = spill::cursors(&kept).expect("what keep_rows wrote parses");
    assert_eq!(
        kept_ids,
        ids.iter()
            .copied()
            .filter(|id| id % 2 == 0)
            .collect::<Vec<_>>()
    );
    let (renumbered, n) = spill::renumber(data, 1).expect("a payload that parsed renumbers");
    assert_eq!(n as usize, ids.len());
    let new_ids = spill::cursors(&renumbered).expect("what renumber wrote parses");
    assert_eq!(new_ids, (1..=ids.len() as i64).collect::<Vec<_>>());
});
