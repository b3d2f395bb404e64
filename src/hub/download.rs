//! Downloading one file into `blobs/<etag>.incomplete`, resuming what is there.
//!
//! Written here rather than taken from hf-hub 0.4.3, whose blocking `download` sends the
//! `Authorization` header to the CDN host the hub redirects to (its size probe follows the
//! redirect with the token), resumes a reopened part file from offset 0 after a failed retry,
//! and has no connect or read timeout. Here, as in huggingface_hub:
//! - redirects are followed by hand and the token is kept only while the origin stays the same;
//! - a Range request resumes from the part file's length; a 200 answer (Range ignored) or a
//!   206 that starts elsewhere restarts the file from zero;
//! - a body cut short (or a 429/5xx answer) is retried up to `RETRIES` times, resuming; then
//!   the part file stays for next time;
//! - the part file is named `<etag>.incomplete`, as huggingface_hub names it, so either tool
//!   resumes the other's interrupted download.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use super::net::{Call, Client, Failure, Follow, Purpose};

/// How many times an interrupted body is resumed within one run.
const RETRIES: usize = 3;

pub(crate) enum DownloadError {
    /// The hub (or the CDN) refused, or could not be reached at all.
    Request(Box<Failure>),
    /// Writing the part file failed (disk full, permissions).
    Write(std::io::Error),
    /// The body kept breaking off; what arrived is kept for the next run. `timed_out` when the
    /// last break was the read timeout.
    Interrupted { reason: String, timed_out: bool },
}

/// One file to fetch.
pub(crate) struct Download<'a> {
    pub client: &'a Client,
    pub url: String,
    pub token: Option<&'a str>,
    pub part: &'a Path,
    /// None when the hub (a mirror) does not say: the download then starts from zero each
    /// time, and only the checksum tells whether it is whole.
    pub size: Option<u64>,
}

impl Download<'_> {
    /// Brings the part file to `size` bytes, telling `progress` the bytes held after each read.
    pub fn run(&self, progress: &mut dyn FnMut(u64)) -> Result<(), DownloadError> {
        let mut last_break = String::new();
        let mut timed_out = false;
        for attempt in 0..=RETRIES {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 * attempt as u64));
            }
            let start = self.resumable_length().map_err(DownloadError::Write)?;
            if Some(start) == self.size {
                // Complete already (or an empty file, which needs no request).
                return std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.part)
                    .map(drop)
                    .map_err(DownloadError::Write);
            }
            let response = match self.request(start) {
                Ok(response) => response,
                Err(failure) if is_retryable(&failure.error, attempt) => {
                    timed_out = failure.timeout.is_some();
                    last_break = failure.error.to_string();
                    continue;
                }
                Err(failure) => return Err(DownloadError::Request(Box::new(failure))),
            };
            match self.append(response, start, progress) {
                Ok(()) => return Ok(()),
                Err(Broken::Write(e)) => return Err(DownloadError::Write(e)),
                Err(Broken::Read(e)) => {
                    timed_out = super::net::is_timeout_io(&e);
                    last_break = e.to_string();
                }
            }
        }
        Err(DownloadError::Interrupted {
            reason: last_break,
            timed_out,
        })
    }

    /// The part file's length if it can be continued; a longer one (or any, when the size is
    /// unknown) is garbage and goes.
    fn resumable_length(&self) -> std::io::Result<u64> {
        match std::fs::metadata(self.part) {
            Ok(meta) if self.size.is_some_and(|size| meta.len() <= size) => Ok(meta.len()),
            Ok(_) => std::fs::remove_file(self.part).map(|_| 0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// GET from `start`, following redirects; the token does not leave the hub's origin.
    fn request(&self, start: u64) -> Result<ureq::Response, Failure> {
        self.client.send(&Call {
            method: "GET",
            url: &self.url,
            token: self.token,
            range_from: (start > 0 || self.size.is_some()).then_some(start),
            purpose: Purpose::Download,
            follow: Follow::All,
        })
    }

    /// Writes the body after `start` bytes, or from zero when the server did not resume.
    fn append(
        &self,
        response: ureq::Response,
        start: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), Broken> {
        let resumed = response.status() == 206
            && response
                .header("Content-Range")
                .is_some_and(|r| r.starts_with(&format!("bytes {start}-")));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(resumed)
            .write(true)
            .truncate(!resumed)
            .open(self.part)
            .map_err(Broken::Write)?;
        let mut held = if resumed { start } else { 0 };
        progress(held);
        let mut body = response.into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = body.read(&mut buf).map_err(Broken::Read)?;
            if n == 0 {
                return file.flush().map_err(Broken::Write);
            }
            file.write_all(&buf[..n]).map_err(Broken::Write)?;
            held += n as u64;
            progress(held);
        }
    }
}

enum Broken {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// A busy or failing server (429, 5xx) is asked again, as is a connection that broke after
/// the first attempt; a hub that cannot be reached at all, or that refuses, is reported at once.
fn is_retryable(err: &ureq::Error, attempt: usize) -> bool {
    match err {
        ureq::Error::Status(status, _) => *status == 429 || *status >= 500,
        ureq::Error::Transport(_) => attempt > 0,
    }
}
