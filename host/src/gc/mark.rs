//! Deciding what stays. Roots: every tag (and, without `--delete-untagged`, every manifest
//! revision, as distribution keeps them), every revision and link written inside the grace
//! period. From the roots: the children of a kept index or manifest list, and every referrer
//! whose subject is kept; every blob a kept manifest references, and the manifest's own blob.
//! What is left is the plan for the sweep.

use std::collections::{HashMap, HashSet};

use super::scan::{Link, Refs, RepoScan, Scan};
use crate::registry::{Digest, RepoName, Tag};

/// One repository's part of the plan.
#[derive(Debug, Default)]
pub struct RepoPlan {
    pub kept: HashSet<Digest>,
    /// Manifest revisions to delete, parents (indexes, subjects) before what they lead to.
    pub manifests: Vec<Digest>,
    /// Referrers-index entries whose referrer is not kept.
    pub referrers: Vec<(Digest, Digest, Link)>,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub repos: Vec<RepoPlan>,
    /// Blobs a kept manifest references (or a fresh link holds).
    pub marked: HashSet<Digest>,
    /// Blobs not marked: candidates, each checked again before it goes.
    pub candidates: Vec<Digest>,
    /// Layer links of each candidate, deleted with it.
    pub links: HashMap<Digest, Vec<Link>>,
}

impl Plan {
    pub fn manifests_marked(&self) -> usize {
        self.repos.iter().map(|r| r.kept.len()).sum()
    }
}

/// Marks from the scan. `gone` lists tags to treat as deleted (for estimates).
pub fn mark(scan: &Scan, delete_untagged: bool, gone: &[(RepoName, Tag)]) -> Plan {
    let mut plan = Plan::default();
    for repo in &scan.repos {
        let kept = kept_manifests(repo, delete_untagged, gone);
        let refs_of = |d: &Digest| -> Option<&Refs> {
            repo.revisions
                .get(d)
                .and_then(|r| r.refs.as_ref())
                .or_else(|| repo.tag_only.get(d).and_then(Option::as_ref))
        };
        for m in &kept {
            plan.marked.insert(m.clone());
            if let Some(r) = refs_of(m) {
                plan.marked.extend(r.blobs.iter().cloned());
                // A child that is not a revision here still keeps its blob.
                plan.marked.extend(r.children.iter().cloned());
            }
        }
        for (d, l) in &repo.layers {
            if l.fresh {
                plan.marked.insert(d.clone());
            }
        }
        let referrers = repo.referrers.iter().filter(|(_, r, l)| !l.fresh && !kept.contains(r)).cloned().collect();
        let manifests = parents_first(repo, &kept);
        plan.repos.push(RepoPlan { kept, manifests, referrers });
    }
    for repo in &scan.repos {
        for (d, l) in &repo.layers {
            if !plan.marked.contains(d) {
                plan.links.entry(d.clone()).or_default().push(l.clone());
            }
        }
    }
    plan.candidates = scan.blobs.iter().filter(|d| !plan.marked.contains(*d)).cloned().collect();
    plan
}

/// The manifests of a repository that stay.
fn kept_manifests(repo: &RepoScan, delete_untagged: bool, gone: &[(RepoName, Tag)]) -> HashSet<Digest> {
    let mut kept: HashSet<Digest> = repo
        .tags
        .iter()
        .filter(|(t, _)| !gone.iter().any(|(n, g)| *n == repo.name && g == t))
        .filter_map(|(_, d)| d.clone())
        .collect();
    for (d, rev) in &repo.revisions {
        if !delete_untagged || rev.fresh {
            kept.insert(d.clone());
        }
    }
    // Children of kept indexes and referrers of kept subjects, to a fixpoint.
    let mut queue: Vec<Digest> = kept.iter().cloned().collect();
    let mut referrers_of: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for (d, rev) in &repo.revisions {
        if let Some(s) = rev.refs.as_ref().and_then(|r| r.subject.as_ref()) {
            referrers_of.entry(s).or_default().push(d);
        }
    }
    while let Some(m) = queue.pop() {
        let refs = repo
            .revisions
            .get(&m)
            .and_then(|r| r.refs.as_ref())
            .or_else(|| repo.tag_only.get(&m).and_then(Option::as_ref));
        let children = refs.map(|r| r.children.iter().collect::<Vec<_>>()).unwrap_or_default();
        let referrers = referrers_of.get(&m).cloned().unwrap_or_default();
        for next in children.into_iter().chain(referrers) {
            if repo.revisions.contains_key(next) && kept.insert(next.clone()) {
                queue.push(next.clone());
            }
        }
    }
    kept
}

/// The revisions to delete, ordered so an index comes before its children and a subject before
/// its referrers: sparing one at the last moment can then still spare what it leads to.
fn parents_first(repo: &RepoScan, kept: &HashSet<Digest>) -> Vec<Digest> {
    let doomed: Vec<&Digest> = repo.revisions.keys().filter(|d| !kept.contains(*d)).collect();
    let set: HashSet<&Digest> = doomed.iter().copied().collect();
    // Parents of each doomed revision among the doomed.
    let mut parents: HashMap<&Digest, usize> = doomed.iter().map(|d| (*d, 0)).collect();
    let mut leads_to: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for d in &doomed {
        let Some(refs) = repo.revisions[*d].refs.as_ref() else { continue };
        for c in &refs.children {
            if set.contains(c) && c != *d {
                *parents.get_mut(c).unwrap() += 1;
                leads_to.entry(*d).or_default().push(c);
            }
        }
        if let Some(s) = refs.subject.as_ref().filter(|s| set.contains(s) && *s != *d) {
            *parents.get_mut(*d).unwrap() += 1;
            leads_to.entry(s).or_default().push(d);
        }
    }
    let mut ready: Vec<&Digest> = parents.iter().filter(|(_, n)| **n == 0).map(|(d, _)| *d).collect();
    ready.sort();
    let mut out = Vec::new();
    while let Some(d) = ready.pop() {
        out.push(d.clone());
        for n in leads_to.get(d).cloned().unwrap_or_default() {
            let c = parents.get_mut(n).unwrap();
            *c -= 1;
            if *c == 0 {
                ready.push(n);
            }
        }
    }
    // A cycle (not possible with content digests, but cheap to cover): the rest, in any order.
    for d in doomed {
        if !out.contains(d) {
            out.push(d.clone());
        }
    }
    out
}
