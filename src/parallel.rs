//! The machine-wide scans visit every process once and each visit is independent: share them out
//! over the cores with one atomic counter (idle workers take the next pid, so one huge process
//! does not hold the others up). Shared by the Linux and macOS scans.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Calls `visit(&mut state, item)` for every item of `items`, on up to 4 threads; each thread
/// starts from `init()` and its final state is returned (in no particular order). A thread that
/// panics loses its state, like a process that vanished mid-scan.
pub fn for_each_shared<T, S, I, V>(items: &[T], init: I, visit: V) -> Vec<S>
where
    T: Sync,
    S: Send,
    I: Fn() -> S + Sync,
    V: Fn(&mut S, &T) + Sync,
{
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut state = init();
                    while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                        visit(&mut state, item);
                    }
                    state
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_item_once() {
        let items: Vec<u32> = (0..10_000).collect();
        let states = super::for_each_shared(&items, Vec::new, |seen, &i| seen.push(i));
        let mut all: Vec<u32> = states.into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(all, items);
        assert!(super::for_each_shared(&[] as &[u32], || 0, |_, _| {}).len() <= 1);
    }
}
