//! A Hugging Face hub on 127.0.0.1 for tests: the endpoints mtsum (and huggingface_hub) use,
//! with the headers the real hub sends, a request log, and faults on demand.
//!
//! - `GET /api/models/{repo}/revision/{rev}[?blobs=true]`: the listing (`sha`, `siblings` with
//!   `blobId`, `size`, `lfs.sha256`), and `GET /api/models/{repo}/tree/{rev}` (huggingface_hub's
//!   snapshot_download lists with it).
//! - `GET|HEAD /{repo}/resolve/{rev}/{file}`: small files directly (`ETag` = git blob id), LFS
//!   files as a 302 to an absolute CDN URL (`X-Linked-Etag` = sha256, `X-Linked-Size`);
//!   `X-Repo-Commit` always.
//! - `GET|HEAD /cdn/{sha256}` on a second port (another origin, like the real CDN): LFS content.
//! - Range requests (`bytes=a-` and `bytes=a-b`) answer 206 with `Content-Range`.
//! - Errors carry `X-Error-Code` as the hub's do: `RepoNotFound` (401 without a token, 404
//!   with one), `RevisionNotFound`, `EntryNotFound`, `GatedRepo` (401 without a token, 403 with
//!   a wrong one).
//!
//! - Mirror mode ([`MockHub::mirror`]): the listing ignores `?blobs=true` and gives file names
//!   only, as some mirrors and proxies do; the `resolve` headers stay the hub's.
//! - Slow bodies ([`Fault::Slow`]) and stalls ([`MockHub::stall`]: no answer for a while) for
//!   timeouts and for two clients fetching at once.
//!
//! Every connection is closed after one answer, so each request is one log entry.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// One file of a mock repo.
#[derive(Debug, Clone)]
pub struct MockFile {
    pub name: String,
    pub bytes: Vec<u8>,
    /// Stored with git LFS: served through the CDN redirect, checked by sha256.
    pub lfs: bool,
}

impl MockFile {
    pub fn text(name: &str, text: &str) -> MockFile {
        MockFile {
            name: name.into(),
            bytes: text.as_bytes().to_vec(),
            lfs: false,
        }
    }

    pub fn lfs(name: &str, bytes: Vec<u8>) -> MockFile {
        MockFile {
            name: name.into(),
            bytes,
            lfs: true,
        }
    }

    /// Every file of a folder (one level), LFS for weight-like extensions as the hub's default
    /// `.gitattributes` says.
    pub fn from_dir(dir: &Path) -> Vec<MockFile> {
        let mut files: Vec<MockFile> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let lfs = [".safetensors", ".bin", ".model", ".h5", ".ot", ".msgpack"]
                    .iter()
                    .any(|ext| name.ends_with(ext));
                MockFile {
                    bytes: std::fs::read(e.path()).unwrap(),
                    name,
                    lfs,
                }
            })
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files
    }

    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.bytes))
    }

    /// Git's blob id of the content.
    pub fn git_sha1(&self) -> String {
        git_sha1(&self.bytes)
    }

    /// The blob name a cache gives this file: sha256 for LFS files, the git blob id otherwise.
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.git_sha1()
        }
    }

    fn pointer(&self) -> String {
        format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
            self.sha256(),
            self.bytes.len()
        )
    }
}

fn git_sha1(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

/// A way for the hub to misbehave when serving a file's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Serve only the first n bytes, as if that were the whole file (consistent lengths).
    Truncate(usize),
    /// Serve the file with its last byte changed (right size, wrong checksum).
    Corrupt,
    /// Promise the full length, send n bytes, close the connection.
    Disconnect(usize),
    /// Answer a Range request with 200 and the whole file, as some servers do.
    IgnoreRange,
    /// Answer 503, as a busy CDN does now and then.
    Unavailable,
    /// Send the body in 20 pieces spread over this long.
    Slow(Duration),
}

/// One request as the hub saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    /// Path without the query.
    pub path: String,
    pub query: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    /// The status answered.
    pub status: u16,
}

impl Logged {
    /// A request answered with file content (not a redirect, not a 1-byte metadata probe).
    pub fn is_download(&self) -> bool {
        self.method == "GET"
            && matches!(self.status, 200 | 206)
            && (self.path.contains("/resolve/") || self.path.starts_with("/cdn/"))
            && self.range.as_deref() != Some("bytes=0-0")
    }

    /// The first byte asked for by a Range header.
    pub fn range_start(&self) -> Option<u64> {
        let spec = self.range.as_deref()?.strip_prefix("bytes=")?;
        spec.split('-').next()?.parse().ok()
    }
}

#[derive(Default)]
struct MockRepo {
    /// Branch or tag -> commit.
    refs: HashMap<String, String>,
    commits: HashMap<String, Vec<MockFile>>,
    /// Token a gated repo wants.
    gate: Option<String>,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, MockRepo>,
    log: Vec<Logged>,
    /// (file name, fault, times left), applied in order.
    faults: Vec<(String, Fault, usize)>,
    commits_made: usize,
    /// Listings without blob details.
    mirror: bool,
    /// `resolve` answers without `ETag` or `X-Linked-Etag` (a proxy that drops them).
    strip_etags: bool,
    /// (part of a path, how long): requests whose path contains it wait before any answer.
    stalls: Vec<(String, Duration)>,
}

/// The running mock hub; it serves until the test process ends.
pub struct MockHub {
    endpoint: String,
    state: Arc<Mutex<State>>,
}

impl MockHub {
    /// Starts the hub and its CDN on two ports: another origin, as the real CDN is, so that
    /// clients neither send the token there nor take its answers for the hub's.
    pub fn start() -> MockHub {
        let state = Arc::new(Mutex::new(State::default()));
        let hub = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let cdn = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let endpoint = format!("http://{}", hub.local_addr().unwrap());
        // Named `localhost`, not 127.0.0.1: another host to clients, like the real CDN.
        let cdn_base = format!("http://localhost:{}", cdn.local_addr().unwrap().port());
        listen(hub, Arc::clone(&state), Some(cdn_base));
        listen(cdn, Arc::clone(&state), None);
        MockHub { endpoint, state }
    }

    /// The URL to use as `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// An endpoint on which nothing listens (a hub out of reach).
    pub fn unreachable_endpoint() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}")
    }

    /// Makes a new commit holding exactly `files` and points `branch` at it; returns the commit.
    pub fn publish(&self, repo: &str, branch: &str, files: Vec<MockFile>) -> String {
        let mut state = self.state.lock().unwrap();
        state.commits_made += 1;
        let seed = format!("{repo}\n{branch}\n{}\n", state.commits_made);
        let commit = hex::encode(Sha1::digest(seed.as_bytes()));
        let entry = state.repos.entry(repo.into()).or_default();
        entry.commits.insert(commit.clone(), files);
        entry.refs.insert(branch.into(), commit.clone());
        commit
    }

    /// Points a tag (or branch) at an existing commit.
    pub fn tag(&self, repo: &str, tag: &str, commit: &str) {
        let mut state = self.state.lock().unwrap();
        let entry = state.repos.get_mut(repo).expect("publish the repo first");
        entry.refs.insert(tag.into(), commit.into());
    }

    /// Serves the repo's files only with `Authorization: Bearer <token>`.
    pub fn gate(&self, repo: &str, token: &str) {
        let mut state = self.state.lock().unwrap();
        state
            .repos
            .get_mut(repo)
            .expect("publish the repo first")
            .gate = Some(token.into());
    }

    /// Misbehaves the next `times` times the content of `file` (in any repo) is served, after
    /// the faults planned before for it are used up.
    pub fn fault(&self, file: &str, fault: Fault, times: usize) {
        let mut state = self.state.lock().unwrap();
        state.faults.push((file.into(), fault, times));
    }

    /// Behaves again.
    pub fn clear_faults(&self) {
        let mut state = self.state.lock().unwrap();
        state.faults.clear();
        state.stalls.clear();
    }

    /// Mirror mode: the listing gives file names only, whatever the query asks.
    pub fn mirror(&self, on: bool) {
        self.state.lock().unwrap().mirror = on;
    }

    /// A mirror that drops the `ETag` and `X-Linked-Etag` headers of `resolve` answers.
    pub fn strip_etags(&self, on: bool) {
        self.state.lock().unwrap().strip_etags = on;
    }

    /// Requests whose path contains `path_part` (`/api/`, `/cdn/`, `/resolve/`) get no answer
    /// for `wait`, then the usual one.
    pub fn stall(&self, path_part: &str, wait: Duration) {
        let mut state = self.state.lock().unwrap();
        state.stalls.push((path_part.into(), wait));
    }

    /// Publishes a folder's files (see [`MockFile::from_dir`]) on `main`; returns the commit.
    pub fn publish_dir(&self, repo: &str, dir: &Path) -> String {
        self.publish(repo, "main", MockFile::from_dir(dir))
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn downloads(&self) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(Logged::is_download)
            .collect()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

/// Serves each connection on its own thread: the hub when `cdn_base` is given, else the CDN.
fn listen(listener: TcpListener, state: Arc<Mutex<State>>, cdn_base: Option<String>) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let state = Arc::clone(&state);
            let cdn_base = cdn_base.clone();
            std::thread::spawn(move || serve(stream, &state, cdn_base.as_deref()));
        }
    });
}

/// An answer before it is written.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Close the connection after this many body bytes, whatever Content-Length says.
    cut_after: Option<usize>,
    /// Wait this long before answering at all.
    delay: Option<Duration>,
    /// Spread the body over this long.
    pace: Option<Duration>,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut_after: None,
            delay: None,
            pace: None,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn json(self, value: serde_json::Value) -> Reply {
        let mut reply = self.header("Content-Type", "application/json; charset=utf-8");
        reply.body = value.to_string().into_bytes();
        reply
    }

    fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply::new(status)
            .header("X-Error-Code", code)
            .header("X-Error-Message", message)
            .json(serde_json::json!({ "error": message }))
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
}

fn serve(mut stream: TcpStream, state: &Mutex<State>, cdn_base: Option<&str>) {
    let Some(request) = read_request(&stream) else {
        return;
    };
    let reply = {
        let mut state = state.lock().unwrap();
        let mut reply = match cdn_base {
            Some(cdn_base) => route(&request, &mut state, cdn_base),
            None => match request.path.strip_prefix("/cdn/") {
                Some(sha) => cdn(&request, &mut state, sha),
                None => Reply::error(404, "", "NoSuchKey"),
            },
        };
        if state.strip_etags && request.path.contains("/resolve/") {
            reply
                .headers
                .retain(|(name, _)| !name.eq_ignore_ascii_case("etag") && name != "X-Linked-Etag");
        }
        reply.delay = state
            .stalls
            .iter()
            .find(|(part, _)| request.path.contains(part.as_str()))
            .map(|(_, wait)| *wait);
        state.log.push(Logged {
            method: request.method.clone(),
            path: request.path.clone(),
            query: request.query.clone(),
            range: request.headers.get("range").cloned(),
            authorization: request.headers.get("authorization").cloned(),
            status: reply.status,
        });
        reply
    };
    write_reply(&mut stream, &request, reply);
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Some(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
    })
}

fn write_reply(stream: &mut TcpStream, request: &Request, reply: Reply) {
    if let Some(delay) = reply.delay {
        std::thread::sleep(delay);
    }
    let reason = match reply.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        503 => "Service Unavailable",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    let _ = stream.write_all(head.as_bytes());
    if request.method != "HEAD" {
        let send = reply
            .cut_after
            .unwrap_or(reply.body.len())
            .min(reply.body.len());
        let body = &reply.body[..send];
        match reply.pace {
            Some(pace) => {
                let piece = body.len().div_ceil(20).max(1);
                for chunk in body.chunks(piece) {
                    if stream
                        .write_all(chunk)
                        .and_then(|_| stream.flush())
                        .is_err()
                    {
                        break;
                    }
                    std::thread::sleep(pace / 20);
                }
            }
            None => {
                let _ = stream.write_all(body);
            }
        }
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

fn route(request: &Request, state: &mut State, cdn_base: &str) -> Reply {
    let path = request.path.as_str();
    if let Some(rest) = path.strip_prefix("/api/models/") {
        if let Some((repo, revision)) = rest.split_once("/revision/") {
            return listing(request, state, repo, &decode(revision));
        }
        if let Some((repo, revision)) = rest.split_once("/tree/") {
            return tree(request, state, repo, &decode(revision));
        }
        return Reply::error(404, "", "no such endpoint");
    }
    if let Some((repo, rest)) = path.trim_start_matches('/').split_once("/resolve/") {
        let Some((revision, file)) = rest.split_once('/') else {
            return Reply::error(404, "EntryNotFound", "no file named");
        };
        return resolve(
            request,
            state,
            repo,
            &decode(revision),
            &decode(file),
            cdn_base,
        );
    }
    Reply::error(404, "", "no such endpoint")
}

fn decode(text: &str) -> String {
    text.replace("%2F", "/").replace("%2f", "/")
}

/// The repo and commit a request names, or the hub's error for it.
fn find<'s>(
    request: &Request,
    state: &'s State,
    repo: &str,
    revision: &str,
) -> Result<(&'s MockRepo, String), Reply> {
    let authorized = request.headers.contains_key("authorization");
    let Some(entry) = state.repos.get(repo) else {
        let status = if authorized { 404 } else { 401 };
        return Err(Reply::error(status, "RepoNotFound", "Repository not found"));
    };
    let commit = match entry.refs.get(revision) {
        Some(commit) => commit.clone(),
        None if entry.commits.contains_key(revision) => revision.to_string(),
        None => {
            return Err(Reply::error(
                404,
                "RevisionNotFound",
                &format!("Invalid rev id: {revision}"),
            ))
        }
    };
    Ok((entry, commit))
}

fn listing(request: &Request, state: &State, repo: &str, revision: &str) -> Reply {
    let (entry, commit) = match find(request, state, repo, revision) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    let with_blobs = request.query.contains("blobs=true") && !state.mirror;
    let siblings: Vec<serde_json::Value> = entry.commits[&commit]
        .iter()
        .map(|f| {
            if !with_blobs {
                return serde_json::json!({ "rfilename": f.name });
            }
            let mut s = serde_json::json!({
                "rfilename": f.name,
                "size": f.bytes.len(),
                "blobId": if f.lfs { git_sha1(f.pointer().as_bytes()) } else { f.git_sha1() },
            });
            if f.lfs {
                s["lfs"] = serde_json::json!({
                    "sha256": f.sha256(),
                    "size": f.bytes.len(),
                    "pointerSize": f.pointer().len(),
                });
            }
            s
        })
        .collect();
    Reply::new(200).json(serde_json::json!({
        "_id": format!("mock-{repo}"),
        "id": repo,
        "modelId": repo,
        "sha": commit,
        "private": false,
        "gated": if entry.gate.is_some() { serde_json::json!("manual") } else { serde_json::json!(false) },
        "siblings": siblings,
    }))
}

/// `/api/models/{repo}/tree/{rev}?recursive=true`, what huggingface_hub's snapshot_download
/// lists a repo with.
fn tree(request: &Request, state: &State, repo: &str, revision: &str) -> Reply {
    let (entry, commit) = match find(request, state, repo, revision) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    let entries: Vec<serde_json::Value> = entry.commits[&commit]
        .iter()
        .map(|f| {
            let mut e = serde_json::json!({
                "type": "file",
                "path": f.name,
                "size": f.bytes.len(),
                "oid": if f.lfs { git_sha1(f.pointer().as_bytes()) } else { f.git_sha1() },
            });
            if f.lfs {
                e["lfs"] = serde_json::json!({
                    "oid": f.sha256(),
                    "size": f.bytes.len(),
                    "pointerSize": f.pointer().len(),
                });
            }
            e
        })
        .collect();
    Reply::new(200).json(serde_json::Value::Array(entries))
}

fn resolve(
    request: &Request,
    state: &mut State,
    repo: &str,
    revision: &str,
    file: &str,
    cdn_base: &str,
) -> Reply {
    let (entry, commit) = match find(request, state, repo, revision) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    if let Some(token) = &entry.gate {
        let sent = request.headers.get("authorization");
        if sent != Some(&format!("Bearer {token}")) {
            let status = if sent.is_some() { 403 } else { 401 };
            let message = format!(
                "Access to model {repo} is restricted. You must have access to it and be authenticated to access it. Please log in."
            );
            return Reply::error(status, "GatedRepo", &message);
        }
    }
    let Some(found) = entry.commits[&commit]
        .iter()
        .find(|f| f.name == file)
        .cloned()
    else {
        return Reply::error(
            404,
            "EntryNotFound",
            &format!("{file} does not exist on \"{revision}\""),
        );
    };
    if found.lfs {
        let location = format!("{cdn_base}/cdn/{}?file={}", found.sha256(), found.name);
        let mut reply = Reply::new(302)
            .header("Location", location)
            .header(
                "ETag",
                format!("\"{}\"", git_sha1(found.pointer().as_bytes())),
            )
            .header("X-Linked-Etag", format!("\"{}\"", found.sha256()))
            .header("X-Linked-Size", found.bytes.len().to_string())
            .header("X-Repo-Commit", commit);
        reply.body = b"Found. Redirecting".to_vec();
        return reply;
    }
    let etag = found.git_sha1();
    content(request, state, found)
        .header("ETag", format!("\"{etag}\""))
        .header("X-Repo-Commit", commit)
}

fn cdn(request: &Request, state: &mut State, sha: &str) -> Reply {
    let found = state
        .repos
        .values()
        .flat_map(|r| r.commits.values().flatten())
        .find(|f| f.lfs && f.sha256() == sha)
        .cloned();
    match found {
        Some(file) => content(request, state, file).header("ETag", format!("\"{sha}\"")),
        None => Reply::error(404, "", "NoSuchKey"),
    }
}

/// A file's bytes, with Range support and the fault planned for it, if any.
fn content(request: &Request, state: &mut State, file: MockFile) -> Reply {
    let range = request.headers.get("range").map(String::as_str);
    // A metadata probe (HEAD, or the 1-byte range some clients send) uses up no fault.
    let probe = range == Some("bytes=0-0") || request.method == "HEAD";
    let mut bytes = file.bytes.clone();
    let mut cut_after = None;
    let mut pace = None;
    let mut honour_range = true;
    let planned = state
        .faults
        .iter_mut()
        .find(|(name, _, times)| *name == file.name && *times > 0);
    if let (false, Some((_, fault, times))) = (probe, planned) {
        *times -= 1;
        match *fault {
            Fault::Truncate(n) => bytes.truncate(n),
            Fault::Corrupt => {
                if let Some(last) = bytes.last_mut() {
                    *last ^= 0xff;
                }
            }
            Fault::Disconnect(n) => cut_after = Some(n),
            Fault::IgnoreRange => honour_range = false,
            Fault::Unavailable => return Reply::error(503, "", "Service Unavailable"),
            Fault::Slow(over) => pace = Some(over),
        }
    }
    let total = bytes.len();
    let mut reply = match range
        .filter(|_| honour_range)
        .and_then(|r| parse_range(r, total))
    {
        Some(Ok((start, end))) => {
            let mut reply =
                Reply::new(206).header("Content-Range", format!("bytes {start}-{end}/{total}"));
            reply.body = bytes[start..=end].to_vec();
            reply
        }
        Some(Err(())) => {
            return Reply::new(416).header("Content-Range", format!("bytes */{total}"))
        }
        None => {
            let mut reply = Reply::new(200);
            reply.body = bytes;
            reply
        }
    };
    reply.cut_after = cut_after;
    reply.pace = pace;
    reply
        .header("Accept-Ranges", "bytes")
        .header("Content-Type", "application/octet-stream")
}

/// `bytes=a-` or `bytes=a-b` -> inclusive (start, end); Err when unsatisfiable.
fn parse_range(header: &str, total: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = header.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: usize = start.parse().ok()?;
    let end = if end.is_empty() {
        total.saturating_sub(1)
    } else {
        end.parse::<usize>().ok()?.min(total.saturating_sub(1))
    };
    if start >= total || start > end {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}
