//! berth-bench: the registry client half of `bench/run.sh`.
//!
//! ```text
//! berth-bench pushes --url http://127.0.0.1:5000 [--count 200] [--repo bench/pushes] [--layer-size 2048]
//! berth-bench load --url http://127.0.0.1:5000/v2/ [--method HEAD] [--connections 32] [--threads 1]
//!                  [--duration 10] [-H 'Accept: ...']...
//! berth-bench receive [--port 0] [--parse]
//! ```
//!
//! `pushes` pushes `count` small images one after another over one keep-alive connection, the way
//! a registry client does it: for each of the config blob and the (unique) layer blob a `HEAD`
//! existence check, `POST /blobs/uploads/` and `PUT <location>?digest=` with the body; then a
//! manifest `PUT` by tag. It prints the total wall-clock seconds on stdout (one number) and a
//! summary on stderr. Any unexpected status aborts with a non-zero exit.
//!
//! `receive` is a native notification receiver (see receive.rs) for bench/events.py.
//!
//! `load` is a closed-loop HTTP/1.1 load generator (see load.rs) for the requests/s figures; it
//! exists because wrk cannot do `HEAD`. It prints `<requests/s> <non-2xx> <errors>` on stdout.

mod load;
mod receive;

use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn usage() -> ExitCode {
    eprintln!(
        "usage: berth-bench pushes --url URL [--count N] [--repo NAME] [--layer-size BYTES]\n\
         \x20      berth-bench load --url URL [--method M] [--connections N] [--threads N] \
         [--duration SECS] [-H 'Name: value']...\n\
         \x20      berth-bench receive [--port N] [--parse]\n\
         \n\
         pushes   push N small images (config + one unique layer + manifest by tag), sequentially,\n\
         \x20        over keep-alive; prints the total seconds\n\
         load     closed-loop HTTP/1.1 load on keep-alive connections (GET or HEAD); prints\n\
         \x20        '<requests/s> <non-2xx> <errors>'\n\
         receive  notification receiver: counts the events POSTed to it, GET /count answers\n\
         \x20        the total; prints its URL"
    );
    ExitCode::from(2)
}

struct PushArgs {
    url: String,
    count: usize,
    repo: String,
    layer_size: usize,
}

fn parse_push_args(mut args: impl Iterator<Item = String>) -> Result<PushArgs, String> {
    let mut out = PushArgs { url: String::new(), count: 200, repo: "bench/pushes".into(), layer_size: 2048 };
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--url" => out.url = val("--url")?.trim_end_matches('/').to_string(),
            "--count" => out.count = val("--count")?.parse().map_err(|e| format!("--count: {e}"))?,
            "--repo" => out.repo = val("--repo")?,
            "--layer-size" => {
                out.layer_size = val("--layer-size")?.parse().map_err(|e| format!("--layer-size: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if out.url.is_empty() {
        return Err("--url is required".into());
    }
    Ok(out)
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `len` deterministic pseudo-random bytes, unique per (nonce, i).
fn unique_bytes(nonce: u128, i: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(format!("{nonce}-{i}").as_bytes());
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

struct Client {
    agent: ureq::Agent,
    base: String,
    repo: String,
    requests: usize,
    /// time spent per request kind: HEAD blob, POST upload, PUT upload, PUT manifest
    spent: [Duration; 4],
}

fn status_of(r: Result<ureq::Response, ureq::Error>) -> Result<ureq::Response, String> {
    match r {
        Ok(resp) => Ok(resp),
        Err(ureq::Error::Status(_, resp)) => Ok(resp),
        Err(e) => Err(format!("transport error: {e}")),
    }
}

fn expect(resp: ureq::Response, want: &[u16], what: &str) -> Result<ureq::Response, String> {
    if want.contains(&resp.status()) {
        Ok(resp)
    } else {
        let status = resp.status();
        let mut body = String::new();
        let _ = resp.into_reader().take(2000).read_to_string(&mut body);
        Err(format!("{what}: expected {want:?}, got {status}: {body}"))
    }
}

/// Read and drop the body so the connection goes back to the pool.
fn drain(resp: ureq::Response) {
    let mut sink = Vec::new();
    let _ = resp.into_reader().take(1 << 20).read_to_end(&mut sink);
}

impl Client {
    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{}", self.base, location)
        } else {
            format!("{}/v2/{}/blobs/uploads/{}", self.base, self.repo, location)
        }
    }

    fn push_blob(&mut self, data: &[u8], digest: &str) -> Result<(), String> {
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repo, digest);
        self.requests += 1;
        let t = Instant::now();
        let head = status_of(self.agent.head(&url).call())?;
        if head.status() == 200 {
            drain(head);
            return Ok(());
        }
        drain(expect(head, &[404], "HEAD blob")?);
        self.spent[0] += t.elapsed();

        self.requests += 1;
        let t = Instant::now();
        let post = status_of(
            self.agent
                .post(&format!("{}/v2/{}/blobs/uploads/", self.base, self.repo))
                .set("Content-Length", "0")
                .call(),
        )?;
        let post = expect(post, &[202], "POST upload")?;
        let location = post.header("Location").ok_or("POST upload: no Location header")?.to_string();
        drain(post);
        self.spent[1] += t.elapsed();

        let mut put_url = self.absolute(&location);
        put_url.push(if put_url.contains('?') { '&' } else { '?' });
        put_url.push_str("digest=");
        put_url.push_str(digest);
        self.requests += 1;
        let t = Instant::now();
        let put = status_of(self.agent.put(&put_url).set("Content-Type", "application/octet-stream").send_bytes(data))?;
        let put = expect(put, &[201], "PUT upload")?;
        if let Some(d) = put.header("Docker-Content-Digest") {
            if d != digest {
                return Err(format!("PUT upload: Docker-Content-Digest {d}, want {digest}"));
            }
        }
        drain(put);
        self.spent[2] += t.elapsed();
        Ok(())
    }

    fn push_manifest(&mut self, tag: &str, body: &[u8]) -> Result<(), String> {
        let url = format!("{}/v2/{}/manifests/{}", self.base, self.repo, tag);
        self.requests += 1;
        let t = Instant::now();
        let put = status_of(self.agent.put(&url).set("Content-Type", OCI_MANIFEST).send_bytes(body))?;
        drain(expect(put, &[201], "PUT manifest")?);
        self.spent[3] += t.elapsed();
        Ok(())
    }
}

fn pushes(args: PushArgs) -> Result<(), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .max_idle_connections_per_host(4)
        .redirects(0)
        .build();
    let mut client =
        Client { agent, base: args.url.clone(), repo: args.repo.clone(), requests: 0, spent: [Duration::ZERO; 4] };
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);

    // Prepare all content up front so only the HTTP work is timed.
    let mut images = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let layer = unique_bytes(nonce, i, args.layer_size);
        let layer_digest = sha256_digest(&layer);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"berth.bench": format!("{nonce}-{i}")}},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest.clone()]},
        }))
        .expect("serialise config");
        let config_digest = sha256_digest(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer.len()}],
        }))
        .expect("serialise manifest");
        images.push((config, config_digest, layer, layer_digest, manifest));
    }

    let start = Instant::now();
    for (i, (config, config_digest, layer, layer_digest, manifest)) in images.iter().enumerate() {
        client.push_blob(config, config_digest)?;
        client.push_blob(layer, layer_digest)?;
        client.push_manifest(&format!("t{i}"), manifest)?;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "pushed {} images ({} requests) to {}/{} in {:.3} s ({:.1} images/s)",
        args.count,
        client.requests,
        args.url,
        args.repo,
        secs,
        args.count as f64 / secs
    );
    let per = |i: usize, n: usize| client.spent[i].as_secs_f64() * 1e3 / n.max(1) as f64;
    let n = args.count;
    eprintln!(
        "mean latency: HEAD blob {:.2} ms, POST upload {:.2} ms, PUT upload {:.2} ms, PUT manifest {:.2} ms",
        per(0, 2 * n),
        per(1, 2 * n),
        per(2, 2 * n),
        per(3, n)
    );
    println!("{secs:.3}");
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("pushes") => match parse_push_args(args).and_then(pushes) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Some("load") => match load::parse_args(args).and_then(load::run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Some("receive") => match receive::parse_args(args).and_then(receive::run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Some("-h") | Some("--help") | None => usage(),
        Some(other) => {
            eprintln!("berth-bench: unknown command {other}");
            usage()
        }
    }
}
