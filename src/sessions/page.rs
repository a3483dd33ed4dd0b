//! One page of a listing in name order, without sorting the whole map: the
//! `limit` smallest names that start with a prefix and sort after a cursor.

use std::collections::BinaryHeap;
use std::sync::Arc;

/// One pass over `names` keeping only the `limit` smallest that start with
/// `prefix` and sort after `after` (a bounded heap): O(n log limit) time,
/// O(limit) memory, no copy of the map. In name order.
pub(crate) fn smallest<'a>(
    names: impl Iterator<Item = &'a Arc<str>>,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<&'a Arc<str>> {
    let mut heap: BinaryHeap<&Arc<str>> = BinaryHeap::with_capacity(limit + 1);
    for name in names {
        if name.starts_with(prefix) && after.is_none_or(|a| &**name > a) {
            heap.push(name);
            if heap.len() > limit {
                heap.pop();
            }
        }
    }
    heap.into_sorted_vec()
}
