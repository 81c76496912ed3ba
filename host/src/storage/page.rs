//! Ordered pages of a directory's children: what `StorageDriver::list_page` returns, and the
//! bounded selection drivers without a native ordered listing use to build one.

use std::collections::BinaryHeap;

/// Child names (not paths) of a directory, ascending bytewise, all after the asked start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub names: Vec<String>,
    /// More children may follow the last name (a page may also end short with `more` set: ask
    /// again after its last name).
    pub more: bool,
}

/// Files below a directory at any depth, as paths relative to it, in key order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlatPage {
    pub keys: Vec<String>,
    /// More keys follow the last one.
    pub more: bool,
}

/// Keeps the `limit` smallest names after `after` from names offered in any order: a page
/// holds `limit` names in memory however large the directory it is chosen from.
pub struct Selection<'a> {
    after: Option<&'a str>,
    limit: usize,
    /// A max-heap: its top is the one to drop for a smaller name.
    heap: BinaryHeap<String>,
    more: bool,
}

impl<'a> Selection<'a> {
    pub fn new(after: Option<&'a str>, limit: usize) -> Self {
        Selection { after, limit, heap: BinaryHeap::with_capacity(limit.min(4096) + 1), more: false }
    }

    pub fn offer(&mut self, name: &str) {
        if self.after.is_some_and(|a| name <= a) {
            return;
        }
        if self.heap.len() < self.limit {
            self.heap.push(name.to_string());
        } else {
            self.more = true;
            if self.heap.peek().is_some_and(|top| name < top.as_str()) {
                self.heap.pop();
                self.heap.push(name.to_string());
            }
        }
    }

    pub fn is_full(&self) -> bool {
        self.heap.len() >= self.limit
    }

    pub fn finish(self) -> ListPage {
        let mut names = self.heap.into_vec();
        names.sort_unstable();
        names.dedup();
        ListPage { names, more: self.more }
    }
}

/// How many names of `sorted` (ascending) are certain to be the first children after `after`,
/// when a service listed the keys up to `last_key` (relative to the directory, `None`: to the
/// end) in its key order.
///
/// Key order and name order differ in one case: a directory `u` is listed as `u/`, and `/`
/// sorts after `-` and `.`, so `u-x/` comes before `u/` although `u` < `u-x`. A name is only
/// settled once every such shorter `u` it extends is either seen or could not exist unseen
/// (its `u/` is within the listed keys).
pub fn settled(sorted: &[String], after: Option<&str>, last_key: Option<&str>) -> usize {
    settled_unless(sorted, after, last_key, |_| false)
}

/// [`settled`], where `absent(u)` says a shorter name `u` is known not to exist (asked of the
/// service), so it holds nothing back.
pub fn settled_unless(
    sorted: &[String],
    after: Option<&str>,
    last_key: Option<&str>,
    absent: impl Fn(&str) -> bool,
) -> usize {
    let Some(last_key) = last_key else { return sorted.len() };
    sorted.iter().position(|e| !blockers_of(e, sorted, after, last_key).all(&absent)).unwrap_or(sorted.len())
}

/// The shorter names that may exist unseen and sort before `e` (see [`settled`]).
fn blockers_of<'a>(
    e: &'a str,
    sorted: &'a [String],
    after: Option<&'a str>,
    last_key: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    e.bytes().enumerate().filter_map(move |(i, b)| {
        if b >= b'/' || i == 0 {
            return None;
        }
        let u = &e[..i];
        (after.is_none_or(|a| u > a)
            && sorted.binary_search_by(|x| x.as_str().cmp(u)).is_err()
            && format!("{u}/").as_str() > last_key)
            .then_some(u)
    })
}

/// Every shorter name that holds back the first `count` of `sorted`, in order, each once: ask
/// the service whether they exist, then [`settled_unless`].
pub fn blockers(sorted: &[String], count: usize, after: Option<&str>, last_key: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in sorted.iter().take(count) {
        for u in blockers_of(e, sorted, after, last_key) {
            if !out.iter().any(|o| o == u) {
                out.push(u.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_name_known_absent_holds_nothing_back() {
        let names: Vec<String> = ["repo-1", "repo-2", "repo.x"].iter().map(|s| s.to_string()).collect();
        let last = Some("repo.x/_manifests/tags/a");
        assert_eq!(settled(&names, None, last), 0);
        assert_eq!(blockers(&names, 3, None, last.unwrap()), vec!["repo".to_string()]);
        assert_eq!(settled_unless(&names, None, last, |u| u == "repo"), 3);
        // Listed past `repo/`: nothing to ask.
        assert!(blockers(&names, 3, None, "repo/zzz").is_empty());
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn selection_keeps_the_smallest_after_the_start() {
        let mut sel = Selection::new(Some("b"), 2);
        for n in ["e", "a", "d", "b", "c", "bb"] {
            sel.offer(n);
        }
        assert_eq!(sel.finish(), ListPage { names: s(&["bb", "c"]), more: true });
        let mut sel = Selection::new(None, 5);
        sel.offer("x");
        assert_eq!(sel.finish(), ListPage { names: s(&["x"]), more: false });
    }

    #[test]
    fn a_name_waits_for_a_shorter_one_listed_later() {
        // The service listed `p-1/` .. `p-3/`; `p/` would come after them.
        let page = s(&["p-1", "p-2", "p-3"]);
        assert_eq!(settled(&page, None, Some("p-3/")), 0);
        assert_eq!(settled(&page, None, None), 3, "the listing ended: nothing is unseen");
        assert_eq!(settled(&page, Some("p"), Some("p-3/")), 3, "p is before the start");
        // Seen, or within the listed keys: settled.
        assert_eq!(settled(&s(&["p", "p-1"]), None, Some("p/")), 2);
        assert_eq!(settled(&s(&["a", "p-1"]), None, Some("q/")), 2);
        assert_eq!(settled(&s(&["a", "b.c", "b.d"]), None, Some("b.d/")), 1);
    }
}
