//! Progress in items, not chunks; exact sizes for `imap`; `map_with`.

use std::sync::{Arc, Mutex};

use mproc::pool::indicatif::ProgressBar;
use mproc::{Pool, Queue};
use mproc_tests::LeakCheck;

fn square(x: u64) -> u64 {
    x * x
}

// map_with lends the context as `&C`, and this context is a Vec.
#[allow(clippy::ptr_arg)]
fn weigh(weights: &Vec<u64>, i: usize) -> u64 {
    weights[i] * 10
}

/// Puts the item on the context's queue (a handle inside the context).
fn record(q: &Queue<u64>, x: u64) -> u64 {
    q.put(x).unwrap();
    x + 1
}

#[test]
fn map_progress_counts_items_in_chunks_of_many() {
    let leaks = LeakCheck::start();
    let pool = Pool::new(2).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    // 1,000 items on 2 workers: chunks of 125 (CPython's default size).
    let v = pool
        .map_on_progress(square, 0..1_000, move |done, total| {
            log.lock().unwrap().push((done, total))
        })
        .unwrap();
    assert_eq!(v, (0..1_000).map(square).collect::<Vec<_>>());
    let seen = seen.lock().unwrap().clone();
    // One report per chunk, each advancing by the chunk's 125 items.
    let want: Vec<_> = (1..=8).map(|k| (k * 125, Some(1_000))).collect();
    assert_eq!(seen, want);

    let bar = ProgressBar::hidden();
    let v = pool.map_progress(square, 0..333, bar.clone()).unwrap();
    assert_eq!(v.len(), 333);
    assert_eq!((bar.position(), bar.length()), (333, Some(333)));
    assert!(bar.is_finished());
    pool.close();
    pool.join().unwrap();
    drop(pool);
    leaks.assert_clean();
}

#[test]
fn imap_is_exact_sized_and_its_progress_counts_items() {
    let leaks = LeakCheck::start();
    let pool = Pool::new(2).unwrap();
    for ordered in [true, false] {
        let input: Vec<u64> = (0..100).collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let make = |input: Vec<u64>| {
            if ordered {
                pool.imap(square, input)
            } else {
                pool.imap_unordered(square, input)
            }
        };
        let mut it = make(input)
            .chunksize(7)
            .unwrap()
            .on_progress(move |done, total| log.lock().unwrap().push((done, total)));
        assert_eq!(it.len(), 100);
        it.next().unwrap().unwrap();
        // 15 chunks went out; one item of the first was yielded.
        assert_eq!(it.len(), 99);
        let mut rest: Vec<u64> = it.by_ref().map(Result::unwrap).collect();
        assert_eq!((it.len(), rest.len()), (0, 99));
        rest.sort();
        assert_eq!(rest.len(), 99);
        let seen = seen.lock().unwrap().clone();
        let want: Vec<_> = (1..=100).map(|d| (d, Some(100))).collect();
        assert_eq!(seen, want, "ordered: {ordered}");
    }
    // An input of unknown length: no total until it is all pulled (a window
    // of one chunk keeps it from being pulled at once), then exact.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let unknown = (0..30u64).filter(|x| x % 3 == 0);
    let n = pool
        .imap(square, unknown)
        .chunksize(4)
        .unwrap()
        .window(1)
        .on_progress(move |done, total| log.lock().unwrap().push((done, total)))
        .count();
    assert_eq!(n, 10);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        (seen.first(), seen.last()),
        (Some(&(1, None)), Some(&(10, Some(10))))
    );
    // indicatif's bar through the feature.
    let bar = ProgressBar::hidden();
    let n = pool
        .imap_unordered(square, (0..64).collect::<Vec<u64>>())
        .chunksize(8)
        .unwrap()
        .progress_bar(bar.clone())
        .count();
    assert_eq!((n, bar.position(), bar.length()), (64, 64, Some(64)));
    pool.close();
    pool.join().unwrap();
    drop(pool);
    leaks.assert_clean();
}

#[test]
fn map_with_shares_one_context_with_every_item() {
    let leaks = LeakCheck::start();
    let pool = Pool::new(2).unwrap();
    let weights: Vec<u64> = (0..50).collect();
    let got = pool.map_with(weigh, weights.clone(), 0..50).unwrap();
    assert_eq!(got, weights.iter().map(|w| w * 10).collect::<Vec<_>>());
    // A handle in the context works in the workers.
    let q: Queue<u64> = Queue::new().unwrap();
    let got = pool.map_with(record, q.clone(), 0..20).unwrap();
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    let mut put: Vec<u64> = q.try_iter().collect::<Result<_, _>>().unwrap();
    put.sort();
    assert_eq!(put, (0..20).collect::<Vec<_>>());
    // An index past the context panics in the task: that item's error.
    let err = pool.map_with(weigh, vec![1, 2], 0..3).unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    pool.close();
    pool.join().unwrap();
    drop((pool, q));
    leaks.assert_clean();
}
