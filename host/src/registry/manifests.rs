//! Manifests: validation by media type, storage in distribution's layout, tags, conditional
//! writes, content negotiation and the OCI 1.1 referrers index.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::digest::{Algorithm, Digest};
use super::schema1::{self, Schema1Error};
use super::{paths, Reference, Registry, RegistryError, RepoName, Result, Tag};
use crate::admission::{self as adm, Entry, ManifestDelete, Write};
use crate::storage::{Expect, StorageError};

/// Largest manifest accepted (the spec asks for at least 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 8 << 20;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_V1: &str = schema1::UNSIGNED;
const DOCKER_V1_SIGNED: &str = schema1::SIGNED;

const KNOWN: [&str; 6] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, DOCKER_V1, DOCKER_V1_SIGNED];

/// A manifest as stored: its bytes exactly as pushed.
#[derive(Debug)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub content: Bytes,
}

/// How many times a tag's compare-and-swap may find that another process moved it before the
/// write gives up with 503 (each time the checks run again against the tag's new target).
const TAG_SWAP_TRIES: u32 = 8;

/// A client's precondition on a manifest write or delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Condition {
    #[default]
    None,
    /// `If-None-Match: *`: the reference must not exist yet.
    Absent,
    /// `If-Match: "<digest>"`: the reference must currently point at one of these.
    Matches(Vec<String>),
}

/// What a successful manifest `PUT` reports.
#[derive(Debug)]
pub struct ManifestPut {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// The referrers index of a subject.
pub struct Referrers {
    pub index: Bytes,
    pub filtered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Index,
}

/// What the registry needs to know of a manifest body.
struct Parsed {
    media_type: String,
    kind: Kind,
    /// Blobs (image) or child manifests (index) that must exist in the repository.
    references: Vec<Digest>,
    subject: Option<Digest>,
    /// A Docker schema 1 manifest, verified.
    schema1: Option<schema1::Manifest>,
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::ManifestInvalid(msg.into())
}

fn bare_media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// Media type of a stored manifest, from its body (as distribution does).
fn detect_media_type(v: &Value) -> String {
    if let Some(mt) = v.get("mediaType").and_then(Value::as_str) {
        return mt.to_string();
    }
    if v.get("schemaVersion").and_then(Value::as_u64) == Some(1) {
        if v.get("signatures").is_some() { DOCKER_V1_SIGNED } else { DOCKER_V1 }.to_string()
    } else if v.get("manifests").is_some() {
        OCI_INDEX.to_string()
    } else {
        OCI_MANIFEST.to_string()
    }
}

fn descriptor_digest(d: &Value, what: &str) -> Result<Digest> {
    let obj = d.as_object().ok_or_else(|| invalid(format!("{what} is not a descriptor object")))?;
    if !obj.get("mediaType").is_some_and(Value::is_string) {
        return Err(invalid(format!("{what} has no mediaType")));
    }
    if obj.get("size").is_none_or(|s| s.as_u64().is_none()) {
        return Err(invalid(format!("{what} has no valid size")));
    }
    let digest = obj.get("digest").and_then(Value::as_str).ok_or_else(|| invalid(format!("{what} has no digest")))?;
    Digest::parse(digest).map_err(|e| invalid(format!("{what}: {e}")))
}

/// Validates a pushed manifest; `schema1` says whether Docker schema 1 is accepted.
fn parse_manifest(content_type: Option<&str>, body: &[u8], schema1: bool) -> Result<Parsed> {
    let v: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| invalid("not a JSON object"))?;
    let body_mt =
        obj.get("mediaType").map(|m| m.as_str().ok_or_else(|| invalid("mediaType is not a string"))).transpose()?;
    let ct = content_type.map(bare_media_type).filter(|c| KNOWN.contains(c));
    if let (Some(b), Some(c)) = (body_mt, ct) {
        if b != c {
            return Err(invalid(format!("mediaType {b:?} in the body differs from Content-Type {c:?}")));
        }
    }
    let media_type = body_mt.or(ct).map(str::to_string).unwrap_or_else(|| detect_media_type(&v));
    let kind = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => Kind::Image,
        OCI_INDEX | DOCKER_LIST => Kind::Index,
        DOCKER_V1 | DOCKER_V1_SIGNED if !schema1 => return Err(invalid("Docker schema 1 manifests are not supported")),
        DOCKER_V1 | DOCKER_V1_SIGNED => {
            let m = schema1::parse(body, media_type == DOCKER_V1_SIGNED).map_err(|e| match e {
                Schema1Error::Invalid(m) => RegistryError::ManifestInvalid(m),
                Schema1Error::Unverified(m) => RegistryError::ManifestUnverified(m),
            })?;
            return Ok(Parsed {
                media_type: m.media_type().to_string(),
                kind: Kind::Image,
                references: {
                    let mut sums = m.blob_sums.clone();
                    sums.sort();
                    sums.dedup();
                    sums
                },
                subject: None,
                schema1: Some(m),
            });
        }
        other => return Err(invalid(format!("unsupported manifest media type {other:?}"))),
    };
    if obj.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let mut references = Vec::new();
    match kind {
        Kind::Image => {
            let config = obj.get("config").ok_or_else(|| invalid("image manifest has no config"))?;
            references.push(descriptor_digest(config, "config")?);
            let layers = obj
                .get("layers")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("image manifest has no layers array"))?;
            for (i, layer) in layers.iter().enumerate() {
                let d = descriptor_digest(layer, &format!("layers[{i}]"))?;
                // Foreign (non-distributable) layers live elsewhere, at their URLs.
                let foreign = layer.get("urls").and_then(Value::as_array).is_some_and(|u| !u.is_empty());
                if !foreign {
                    references.push(d);
                }
            }
        }
        Kind::Index => {
            let manifests = obj
                .get("manifests")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("index has no manifests array"))?;
            for (i, m) in manifests.iter().enumerate() {
                references.push(descriptor_digest(m, &format!("manifests[{i}]"))?);
            }
        }
    }
    let subject = obj.get("subject").map(|s| descriptor_digest(s, "subject")).transpose()?;
    Ok(Parsed { media_type, kind, references, subject, schema1: None })
}

impl Registry {
    async fn read_link(&self, path: &str) -> Result<Option<Digest>> {
        match self.driver.get_content(path).await {
            Ok(b) => Ok(link_target(path, &b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Where `tag` points and the version of its link, for moving it with a compare-and-swap.
    async fn tag_versioned(&self, repo: &RepoName, tag: &Tag) -> Result<(Option<Digest>, Expect)> {
        let path = paths::tag_current_link(repo, tag);
        match self.driver.get_versioned(&path).await {
            Ok((b, version)) => Ok((link_target(&path, &b), Expect::Version(version))),
            Err(e) if e.is_not_found() => Ok((None, Expect::Absent)),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a file (a link, a blob's data) is there.
    async fn exists(&self, path: &str) -> Result<bool> {
        match self.driver.stat_file(path).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The digest a tag points at, if the tag exists.
    pub async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        self.read_link(&paths::tag_current_link(repo, tag)).await
    }

    pub async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Arc<StoredManifest>> {
        let key = reference.to_string();
        if let Some(m) = self.cache.get(repo, &key) {
            return Ok(m);
        }
        let generation = self.cache.generation();
        let unknown = || RegistryError::ManifestUnknown(format!("{repo}:{reference}"));
        let digest = match reference {
            Reference::Tag(tag) => self.resolve_tag(repo, tag).await?.ok_or_else(unknown)?,
            Reference::Digest(d) => {
                if !self.exists(&paths::revision_link(repo, d)).await? {
                    return Err(unknown());
                }
                d.clone()
            }
        };
        let content = match self.driver.get_content(&paths::blob_data(&digest)).await {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Err(unknown()),
            Err(e) => return Err(e.into()),
        };
        let mut media_type = serde_json::from_slice::<Value>(&content)
            .map(|v| detect_media_type(&v))
            .unwrap_or_else(|_| OCI_MANIFEST.into());
        let mut content = content;
        // A schema 1 manifest is stored without its signatures, as distribution stores it. One
        // pushed through Berth is served as it was pushed; one distribution stored is signed by
        // the registry's key, as distribution serves it.
        if media_type == DOCKER_V1 {
            match self.driver.get_content(&paths::schema1_pushed(repo, &digest)).await {
                Ok(pushed) => {
                    media_type = serde_json::from_slice::<Value>(&pushed)
                        .map(|v| detect_media_type(&v))
                        .unwrap_or_else(|_| DOCKER_V1.into());
                    content = pushed;
                }
                Err(e) if e.is_not_found() => {
                    if let Some(signed) = self.schema1.as_ref().and_then(|s| s.sign(&content).ok()) {
                        (content, media_type) = (Bytes::from(signed), DOCKER_V1_SIGNED.to_string());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        let m = Arc::new(StoredManifest { digest, media_type, content });
        self.cache.insert(generation, repo, &key, m.clone());
        Ok(m)
    }

    /// Picks the representation a client accepts. An index the client cannot take is replaced
    /// by its linux/amd64 image (as distribution does for old Docker clients); a manifest whose
    /// type the client rules out is unknown to it.
    pub async fn negotiate(
        &self,
        repo: &RepoName,
        m: Arc<StoredManifest>,
        accept: &[String],
    ) -> Result<Arc<StoredManifest>> {
        let accepts = |mt: &str| accept.iter().any(|a| a == mt || a == "*/*");
        let lists_known = accept.iter().any(|a| KNOWN.contains(&a.as_str()));
        if accept.is_empty() || !lists_known || accepts(&m.media_type) {
            return Ok(m);
        }
        if m.media_type == OCI_INDEX || m.media_type == DOCKER_LIST {
            let v: Value = serde_json::from_slice(&m.content).map_err(|e| invalid(e.to_string()))?;
            let children = v.get("manifests").and_then(Value::as_array).cloned().unwrap_or_default();
            for child in children {
                let platform = child.get("platform");
                let is = |k: &str, want: &str| platform.and_then(|p| p.get(k)).and_then(Value::as_str) == Some(want);
                let child_mt = child.get("mediaType").and_then(Value::as_str).unwrap_or("");
                if is("os", "linux") && is("architecture", "amd64") && accepts(child_mt) {
                    let d = descriptor_digest(&child, "manifests[]")?;
                    return self.get_manifest(repo, &Reference::Digest(d)).await;
                }
            }
        }
        Err(RegistryError::ManifestUnknown(format!(
            "manifest {} is {}, which the Accept header does not allow",
            m.digest, m.media_type
        )))
    }

    async fn check_condition(&self, repo: &RepoName, reference: &Reference, condition: &Condition) -> Result<()> {
        if *condition == Condition::None {
            return Ok(());
        }
        let current = match reference {
            Reference::Tag(tag) => self.resolve_tag(repo, tag).await?,
            Reference::Digest(d) => self.exists(&paths::revision_link(repo, d)).await?.then(|| d.clone()),
        };
        condition_holds(reference, condition, current)
    }

    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        condition: &Condition,
    ) -> Result<ManifestPut> {
        if body.len() > MAX_MANIFEST_SIZE {
            return Err(RegistryError::TooLarge(format!(
                "manifest is {} bytes, the limit is {MAX_MANIFEST_SIZE}",
                body.len()
            )));
        }
        let parsed = parse_manifest(content_type, &body, self.schema1.is_some())?;
        // What is stored and digested: the body, or a schema 1 manifest's signed payload (the
        // body as pushed then goes beside it).
        let (content, pushed) = match &parsed.schema1 {
            Some(m) => {
                if m.name != repo.to_string() {
                    return Err(RegistryError::NameInvalid(format!("manifest is for {:?}, not {repo}", m.name)));
                }
                if matches!(reference, Reference::Tag(t) if m.tag != t.to_string()) {
                    return Err(RegistryError::TagInvalid(m.tag.clone()));
                }
                (Bytes::from(m.canonical.clone()), Some(body.clone()))
            }
            None => (body, None),
        };
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &content);
                if &actual != d {
                    return Err(RegistryError::DigestInvalid(format!("manifest body has digest {actual}, not {d}")));
                }
                actual
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &content),
        };
        let mut announced = parsed.references.clone();
        announced.push(digest.clone());
        announced.extend(parsed.subject.clone());
        if let Err(d) = self.announce(&announced).await {
            return Err(RegistryError::Unavailable(format!("garbage collection is deleting {d}; retry")));
        }
        let kind = parsed.kind;
        let checks = parsed.references.iter().map(|r| async move {
            let present = match kind {
                Kind::Image => {
                    let data = paths::blob_data(r);
                    let (linked, stored) = tokio::join!(self.blob_linked(repo, r), self.exists(&data));
                    linked? && stored?
                }
                Kind::Index => self.exists(&paths::revision_link(repo, r)).await?,
            };
            if present {
                Ok(())
            } else {
                Err(RegistryError::ManifestBlobUnknown(r.clone()))
            }
        });
        futures_util::future::try_join_all(checks).await?;
        // Admission is asked before the tag's lock, so that a slow plugin does not hold up other
        // writes to this tag; its answer stands if, under the lock, the tag still points where
        // the plugin was shown, else it is asked again there (a racing write moved the tag).
        let tag_now = || async {
            match reference {
                Reference::Tag(tag) => {
                    Ok::<_, RegistryError>(self.resolve_tag(repo, tag).await?.map(|d| d.to_string()))
                }
                Reference::Digest(_) => Ok(None),
            }
        };
        let manifest = self.admission_for(repo).map(|_| admission_manifest(&digest, &parsed.media_type, &content));
        let ask = |tag_current: Option<String>, manifest: adm::Manifest| {
            self.admit(repo, move || {
                Write::ManifestPut(adm::ManifestPut {
                    repository: repo.to_string(),
                    tag: match reference {
                        Reference::Tag(t) => Some(t.to_string()),
                        Reference::Digest(_) => None,
                    },
                    manifest,
                    tag_current,
                })
            })
        };
        let early = match &manifest {
            Some(m) => {
                let seen = tag_now().await?;
                let verdict = ask(seen.clone(), m.clone()).await;
                Some((seen, verdict))
            }
            None => None,
        };
        let _guard = match reference {
            Reference::Tag(tag) => Some(self.lock_tag(repo, tag).await),
            Reference::Digest(_) => None,
        };
        // Across processes sharing the storage (replicas), a tag whose move depends on where it
        // points (the client's condition, admission) moves by compare-and-swap: read with its
        // link's version, checked against what was read, and written only if the link is still
        // that version; else read and checked again. The lock above orders this process's own.
        let swapped_tag = match reference {
            Reference::Tag(tag)
                if self.driver.conditional_writes() && (*condition != Condition::None || manifest.is_some()) =>
            {
                Some(tag)
            }
            _ => None,
        };
        // Admission for the tag as it is `now`: the early verdict stands if the tag has not moved
        // since the plugin was shown it, else the plugin is asked again.
        let admit_at = |early: Option<(Option<String>, Result<()>)>, now: Option<String>| async {
            if let Some(m) = &manifest {
                match early {
                    Some((seen, verdict)) if seen == now => verdict?,
                    _ => ask(now, m.clone()).await?,
                }
            }
            Ok::<_, RegistryError>(())
        };
        // The checks against the tag as it is now, and the link version they hold for.
        let settle = |early: Option<(Option<String>, Result<()>)>| async {
            // Only called for a swapped tag.
            let Some(tag) = swapped_tag else { return Ok::<_, RegistryError>(Expect::Absent) };
            let (current, expect) = self.tag_versioned(repo, tag).await?;
            let now = current.as_ref().map(Digest::to_string);
            condition_holds(reference, condition, current)?;
            admit_at(early, now).await?;
            Ok(expect)
        };
        let expect = if swapped_tag.is_some() {
            Some(settle(early).await?)
        } else {
            self.check_condition(repo, reference, condition).await?;
            if manifest.is_some() {
                admit_at(early, tag_now().await?).await?;
            }
            None
        };

        // Content and the links that lead to it are written together; the tag moves last, so
        // a crash never leaves a tag pointing at a manifest that is not stored.
        let blob = paths::blob_data(&digest);
        let link = Bytes::from(digest.to_string());
        // (path, content, whether it is content that must be on disk before it is visible)
        let mut writes = Vec::new();
        let stored = matches!(self.driver.stat_file(&blob).await, Ok(info) if info.size == content.len() as u64);
        if !stored {
            writes.push((blob, content.clone(), true));
        }
        if let Some(pushed) = pushed {
            writes.push((paths::schema1_pushed(repo, &digest), pushed, true));
        }
        writes.push((paths::revision_link(repo, &digest), link.clone(), false));
        if let Some(subject) = &parsed.subject {
            writes.push((paths::referrer_link(repo, subject, &digest), link.clone(), false));
        }
        if let Reference::Tag(tag) = reference {
            writes.push((paths::tag_index_link(repo, tag, &digest), link.clone(), false));
        }
        let mut written: Vec<String> = writes.iter().map(|(p, _, _)| p.clone()).collect();
        futures_util::future::try_join_all(writes.into_iter().map(|(p, c, content)| async move {
            if content {
                self.driver.put_content(&p, c).await
            } else {
                self.driver.put_volatile(&p, c).await
            }
        }))
        .await?;
        if let Reference::Tag(tag) = reference {
            let current = paths::tag_current_link(repo, tag);
            match expect {
                None => self.driver.put_volatile(&current, link).await?,
                Some(mut want) => {
                    let mut conflicts = 0;
                    loop {
                        match self.driver.put_if(&current, link.clone(), want).await {
                            Ok(()) => break,
                            Err(StorageError::Conflict { .. }) if conflicts < TAG_SWAP_TRIES => {
                                // Another process moved the tag since it was read: check again.
                                conflicts += 1;
                                want = settle(None).await?;
                            }
                            Err(StorageError::Conflict { .. }) => {
                                return Err(RegistryError::Unavailable(format!(
                                    "tag {tag} kept moving under other writers ({conflicts} times); retry"
                                )))
                            }
                            Err(StorageError::Unsupported { driver }) => {
                                tracing::warn!(driver, %repo, %tag, "storage refused a conditional write; the tag is written unconditionally");
                                self.driver.put_volatile(&current, link).await?;
                                break;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
            written.push(current);
        }
        self.sync(&written).await?;
        self.cache.invalidate(repo);
        tracing::debug!(%repo, %reference, %digest, media_type = parsed.media_type, "manifest stored");
        Ok(ManifestPut { digest, subject: parsed.subject })
    }

    /// Deletes a tag, or a manifest with every tag that points at it.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference, condition: &Condition) -> Result<()> {
        let unknown = || RegistryError::ManifestUnknown(format!("{repo}:{reference}"));
        let mut deleted = Vec::new();
        match reference {
            Reference::Tag(tag) => {
                let _guard = self.lock_tag(repo, tag).await;
                self.check_condition(repo, reference, condition).await?;
                let Some(current) = self.resolve_tag(repo, tag).await? else { return Err(unknown()) };
                self.admit(repo, || {
                    Write::ManifestDelete(ManifestDelete {
                        repository: repo.to_string(),
                        tag: Some(tag.to_string()),
                        digest: current.to_string(),
                        tags: vec![tag.to_string()],
                    })
                })
                .await?;
                let dir = paths::tag(repo, tag);
                self.driver.delete(&dir).await?;
                deleted.push(dir);
            }
            Reference::Digest(digest) => {
                self.check_condition(repo, reference, condition).await?;
                let m = self.get_manifest(repo, reference).await?;
                if self.admission_for(repo).is_some() {
                    let mut tags = Vec::new();
                    for tag in self.all_tags(repo).await? {
                        if self.resolve_tag(repo, &tag).await?.as_ref() == Some(digest) {
                            tags.push(tag.to_string());
                        }
                    }
                    self.admit(repo, || {
                        Write::ManifestDelete(ManifestDelete {
                            repository: repo.to_string(),
                            tag: None,
                            digest: digest.to_string(),
                            tags,
                        })
                    })
                    .await?;
                }
                let subject = serde_json::from_slice::<Value>(&m.content)
                    .ok()
                    .and_then(|v| v.get("subject").and_then(|s| descriptor_digest(s, "subject").ok()));
                let revision = paths::revision_link(repo, digest);
                match self.driver.delete(&revision).await {
                    Ok(()) => deleted.push(revision),
                    Err(e) if e.is_not_found() => return Err(unknown()),
                    Err(e) => return Err(e.into()),
                }
                for tag in self.all_tags(repo).await? {
                    let _guard = self.lock_tag(repo, &tag).await;
                    if self.resolve_tag(repo, &tag).await?.as_ref() == Some(digest) {
                        let dir = paths::tag(repo, &tag);
                        self.driver.delete(&dir).await?;
                        deleted.push(dir);
                    }
                }
                if let Some(subject) = subject {
                    let _ = self.driver.delete(&paths::referrer_link(repo, &subject, digest)).await;
                }
                if m.media_type == DOCKER_V1_SIGNED || m.media_type == DOCKER_V1 {
                    let _ = self.driver.delete(&paths::schema1_pushed(repo, digest)).await;
                }
            }
        }
        self.sync(&deleted).await?;
        self.cache.invalidate(repo);
        Ok(())
    }

    /// The referrers of `subject` in `repo`, as an OCI image index.
    pub async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Referrers> {
        let mut digests = Vec::new();
        match self.driver.list(&paths::referrers(repo, subject)).await {
            Ok(alg_dirs) => {
                for alg_dir in alg_dirs {
                    let alg = alg_dir.rsplit('/').next().unwrap_or_default().to_string();
                    for entry in self.driver.list(&alg_dir).await? {
                        let hex = entry.rsplit('/').next().unwrap_or_default();
                        if let Ok(d) = Digest::parse(&format!("{alg}:{hex}")) {
                            digests.push(d);
                        }
                    }
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        digests.sort();
        let mut manifests = Vec::new();
        for d in digests {
            let m = match self.get_manifest(repo, &Reference::Digest(d)).await {
                Ok(m) => m,
                Err(RegistryError::ManifestUnknown(_)) => continue,
                Err(e) => return Err(e),
            };
            let v: Value = serde_json::from_slice(&m.content).unwrap_or(Value::Null);
            let at = v
                .get("artifactType")
                .and_then(Value::as_str)
                .or_else(|| v.get("config").and_then(|c| c.get("mediaType")).and_then(Value::as_str));
            if artifact_type.is_some_and(|want| at != Some(want)) {
                continue;
            }
            let mut desc = Map::new();
            desc.insert("mediaType".into(), json!(m.media_type));
            desc.insert("digest".into(), json!(m.digest.to_string()));
            desc.insert("size".into(), json!(m.content.len()));
            if let Some(at) = at {
                desc.insert("artifactType".into(), json!(at));
            }
            if let Some(ann) = v.get("annotations").filter(|a| a.is_object()) {
                desc.insert("annotations".into(), ann.clone());
            }
            manifests.push(Value::Object(desc));
        }
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        Ok(Referrers { index: Bytes::from(index.to_string()), filtered: artifact_type.is_some() })
    }
}

/// What an admission policy is shown of a validated manifest: its descriptors with sizes and
/// annotations, its subject, and its artifact type (`artifactType`, else an image's config
/// media type, as the referrers API reports it).
fn admission_manifest(digest: &Digest, media_type: &str, content: &[u8]) -> adm::Manifest {
    let v: Value = serde_json::from_slice(content).unwrap_or(Value::Null);
    let annotations = |v: &Value| -> Vec<(String, String)> {
        v.get("annotations")
            .and_then(Value::as_object)
            .map(|a| a.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default()
    };
    let entry = |d: &Value| -> Option<Entry> {
        Some(Entry {
            media_type: d.get("mediaType")?.as_str()?.to_string(),
            digest: d.get("digest")?.as_str()?.to_string(),
            size: d.get("size")?.as_u64()?,
            artifact_type: d.get("artifactType").and_then(Value::as_str).map(str::to_string),
            annotations: annotations(d),
        })
    };
    let list = |k: &str| -> Vec<Entry> {
        v.get(k).and_then(Value::as_array).map(|a| a.iter().filter_map(entry).collect()).unwrap_or_default()
    };
    let config = v.get("config").and_then(entry);
    let artifact_type = v
        .get("artifactType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| config.as_ref().map(|c| c.media_type.clone()));
    adm::Manifest {
        digest: digest.to_string(),
        media_type: media_type.to_string(),
        artifact_type,
        size: content.len() as u64,
        config,
        layers: list("layers"),
        manifests: list("manifests"),
        subject: v.get("subject").and_then(entry),
        annotations: annotations(&v),
    }
}

/// Whether a client's precondition holds for a reference that points at `current` now.
fn condition_holds(reference: &Reference, condition: &Condition, current: Option<Digest>) -> Result<()> {
    match (condition, current) {
        (Condition::None, _) => Ok(()),
        (Condition::Absent, None) => Ok(()),
        (Condition::Absent, Some(d)) => {
            Err(RegistryError::PreconditionFailed(format!("{reference} already exists (at {d})")))
        }
        (Condition::Matches(want), Some(d)) if want.iter().any(|w| w == "*" || *w == d.to_string()) => Ok(()),
        (Condition::Matches(want), current) => Err(RegistryError::PreconditionFailed(format!(
            "{reference} points at {}, not {}",
            current.map_or("nothing".to_string(), |d| d.to_string()),
            want.join(", ")
        ))),
    }
}

/// The digest a link names. A link a crash left empty or torn reads as absent: the write it
/// belonged to was never acknowledged.
fn link_target(path: &str, content: &[u8]) -> Option<Digest> {
    let d = std::str::from_utf8(content).ok().and_then(|s| Digest::parse(s.trim()).ok());
    if d.is_none() {
        tracing::warn!(path, "ignoring unreadable link");
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn desc(mt: &str) -> Value {
        json!({"mediaType": mt, "digest": D, "size": 0})
    }

    #[test]
    fn parses_by_media_type() {
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": desc("c"), "layers": [desc("l")], "subject": desc(OCI_MANIFEST)});
        let p = parse_manifest(Some(OCI_MANIFEST), m.to_string().as_bytes(), false).unwrap();
        assert_eq!(p.kind, Kind::Image);
        assert_eq!(p.references.len(), 2);
        assert!(p.subject.is_some());
        let i = json!({"schemaVersion": 2, "manifests": [desc(OCI_MANIFEST)]});
        assert_eq!(parse_manifest(Some(OCI_INDEX), i.to_string().as_bytes(), false).unwrap().kind, Kind::Index);
        assert_eq!(parse_manifest(None, i.to_string().as_bytes(), false).unwrap().media_type, OCI_INDEX);
        // Mismatched Content-Type, missing fields, bad digests, schema 1, not JSON.
        assert!(parse_manifest(Some(DOCKER_MANIFEST), m.to_string().as_bytes(), false).is_err());
        assert!(parse_manifest(Some(OCI_MANIFEST), br#"{"schemaVersion":2}"#, false).is_err());
        let bad =
            json!({"schemaVersion": 2, "config": {"mediaType": "c", "digest": "sha256:zz", "size": 1}, "layers": []});
        assert!(parse_manifest(Some(OCI_MANIFEST), bad.to_string().as_bytes(), false).is_err());
        assert!(parse_manifest(None, br#"{"schemaVersion":1,"fsLayers":[]}"#, false).is_err());
        assert!(parse_manifest(None, b"nope", false).is_err());
    }
}
