//! Progress of a call, counted in items (the `progress` feature adds
//! indicatif bars).
//!
//! Every hook counts *items*, never chunks: a `map` of 1,000 items in
//! chunks of 50 reports 50, 100, …, 1,000 of 1,000 — not 1, 2, …, 20
//! (tqdm #1791 is that bug).

/// A progress hook: `(done, total)`, both in items.
pub(crate) type Hook = Box<dyn FnMut(u64, Option<u64>) + Send>;

/// A hook that drives an indicatif bar: its length is set to the total once
/// known, its position to `done`; it is finished when `done` reaches the
/// total.
#[cfg(feature = "progress")]
pub(crate) fn bar_hook(bar: indicatif::ProgressBar) -> impl FnMut(u64, Option<u64>) + Send {
    let mut sized = false;
    move |done, total| {
        if let (false, Some(total)) = (sized, total) {
            bar.set_length(total);
            sized = true;
        }
        bar.set_position(done);
        if total == Some(done) {
            bar.finish();
        }
    }
}
