//! The safe over HTTP: `cardvault safe serve` (a tiny_http server, requests
//! side by side, one at a time against the safe's SQLite ledger) and the terminal's
//! client (ureq). Messages are JSON (docs/FORMATS.md, "Electronic wallet and
//! safe"): 200 with the answer, 409 with a [`SafeRefusal`], 400 for a request
//! that does not parse, 500 when the safe itself failed (nothing committed).

use super::{
    EscrowFetch, EscrowRequest, OwnerChallengeRequest, ReceiptRequest, ReleaseRequest, Safe, SafeRefusal,
    WithdrawRequest,
};
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Read;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Largest request body the server reads.
const MAX_BODY: u64 = 64 * 1024;

#[derive(serde::Deserialize)]
struct DepositRequest {
    deposit: String,
}

fn json_response(status: u16, body: &impl Serialize) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).expect("static header");
    tiny_http::Response::from_data(serde_json::to_vec(body).expect("json"))
        .with_status_code(status)
        .with_header(header)
}

fn answer<T: Serialize>(
    r: Result<std::result::Result<T, SafeRefusal>>,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    match r {
        Ok(Ok(v)) => json_response(200, &v),
        Ok(Err(refusal)) => json_response(
            409,
            &serde_json::json!({ "refusal": refusal, "message": refusal.to_string() }),
        ),
        Err(e) => json_response(500, &serde_json::json!({ "error": e.to_string() })),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> std::result::Result<T, tiny_http::Response<std::io::Cursor<Vec<u8>>>> {
    serde_json::from_slice(body).map_err(|e| json_response(400, &serde_json::json!({ "error": e.to_string() })))
}

/// Set `TCP_NODELAY` on the listening socket; the connections it accepts
/// inherit it. An answer larger than the server's 1 KiB write buffer goes
/// out in two writes, and with Nagle's algorithm the second waits for the
/// client's delayed ACK of the first (40 ms on Linux) on every request of a
/// kept-alive connection.
fn no_delay(listener: &std::net::TcpListener) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a c_int option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Requests served side by side. Each worker reads and parses its request
/// on its own; the ledger (one SQLite connection, the open owner
/// challenges) is used by one request at a time, so every check and commit
/// sees the commits before it as with one request at a time; the checkpoint
/// is written after the ledger is free again, one write for every request
/// that committed meanwhile ([`super::Checkpointer`]).
const WORKERS: usize = 4;

/// Serve `safe` on `listen` until the process ends. `ready` gets the bound
/// address once the socket listens (port 0 picks a free one).
pub fn serve(mut safe: Safe, listen: &str, ready: impl FnOnce(std::net::SocketAddr)) -> Result<()> {
    let listener =
        std::net::TcpListener::bind(listen).map_err(|e| Error::Usage(format!("listening on {listen}: {e}")))?;
    no_delay(&listener).map_err(|e| Error::io(format!("listening on {listen}"), e))?;
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| Error::Usage(format!("listening on {listen}: {e}")))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| Error::Usage(format!("{listen} is not an IP address")))?;
    let checkpoints = Mutex::new(safe.checkpointer()?);
    safe.defer_checkpoints();
    let safe = Mutex::new(safe);
    ready(addr);
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| worker(&server, &safe, &checkpoints));
        }
    });
    Ok(())
}

/// Ends the process when a worker panics (as a panic did when the safe
/// served from one thread): a safe does not go on half served.
struct ExitOnPanic;

impl Drop for ExitOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            std::process::exit(101);
        }
    }
}

fn worker(server: &tiny_http::Server, safe: &Mutex<Safe>, checkpoints: &Mutex<super::Checkpointer>) {
    let _exit = ExitOnPanic;
    let ledger = || safe.lock().unwrap_or_else(PoisonError::into_inner);
    while let Ok(mut req) = server.recv() {
        let mut body = Vec::new();
        let read = req.as_reader().take(MAX_BODY).read_to_end(&mut body);
        let method = req.method().clone();
        let url = req.url().to_string();
        // Deposits and receipts move the ledger's head: the checkpoint
        // covers them before the answer leaves.
        let mut moves_head = false;
        let response = match (read, &method, url.as_str()) {
            (Err(e), _, _) => json_response(400, &serde_json::json!({ "error": e.to_string() })),
            (_, tiny_http::Method::Get, "/v1/info") => json_response(200, &ledger().info()),
            (_, tiny_http::Method::Get, "/v1/items") => answer(ledger().list().map(Ok)),
            (_, tiny_http::Method::Post, "/v1/deposit") => match parse::<DepositRequest>(&body) {
                Ok(d) => {
                    moves_head = true;
                    answer(ledger().deposit(&d.deposit))
                }
                Err(r) => r,
            },
            (_, tiny_http::Method::Post, "/v1/withdraw") => match parse::<WithdrawRequest>(&body) {
                Ok(w) => answer(ledger().withdraw(&w)),
                Err(r) => r,
            },
            (_, tiny_http::Method::Post, "/v1/receipt") => match parse::<ReceiptRequest>(&body) {
                Ok(w) => {
                    moves_head = true;
                    answer(ledger().receipt(&w))
                }
                Err(r) => r,
            },
            (_, tiny_http::Method::Post, "/v1/escrow") => match parse::<EscrowRequest>(&body) {
                Ok(w) => answer(ledger().escrow(&w)),
                Err(r) => r,
            },
            (_, tiny_http::Method::Post, "/v1/escrow/fetch") => match parse::<EscrowFetch>(&body) {
                Ok(w) => answer(ledger().escrow_fetch(&w)),
                Err(r) => r,
            },
            (_, tiny_http::Method::Post, "/v1/owner/challenge") => match parse::<OwnerChallengeRequest>(&body) {
                Ok(w) => answer(ledger().owner_challenge(&w)),
                Err(r) => r,
            },
            (_, tiny_http::Method::Post, "/v1/release") => match parse::<ReleaseRequest>(&body) {
                Ok(w) => answer(ledger().release(&w)),
                Err(r) => r,
            },
            _ => json_response(404, &serde_json::json!({ "error": format!("no {method} {url}") })),
        };
        let response = match moves_head {
            true => match checkpoints.lock().unwrap_or_else(PoisonError::into_inner).catch_up() {
                Ok(()) => response,
                // Committed but not yet under a checkpoint: the terminal
                // sees a failed safe and asks again (the same deposit or
                // receipt again changes nothing), as after a crash between
                // the commit and the checkpoint write.
                Err(e) => json_response(500, &serde_json::json!({ "error": e.to_string() })),
            },
            false => response,
        };
        // A client that went away does not stop the safe.
        let _ = req.respond(response);
    }
}

/// The terminal's side: one safe's address.
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(10))
                .timeout(Duration::from_secs(60))
                .build(),
        }
    }

    fn unreachable(&self, reason: String) -> Error {
        Error::SafeUnreachable {
            address: self.base.clone(),
            reason,
        }
    }

    fn finish<T: DeserializeOwned>(
        &self,
        r: std::result::Result<ureq::Response, ureq::Error>,
    ) -> Result<std::result::Result<T, SafeRefusal>> {
        match r {
            Ok(resp) => resp
                .into_json::<T>()
                .map(Ok)
                .map_err(|e| self.unreachable(format!("unreadable answer: {e}"))),
            Err(ureq::Error::Status(409, resp)) => {
                #[derive(serde::Deserialize)]
                struct Refused {
                    refusal: SafeRefusal,
                }
                resp.into_json::<Refused>()
                    .map(|r| Err(r.refusal))
                    .map_err(|e| self.unreachable(format!("unreadable refusal: {e}")))
            }
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                Err(self.unreachable(format!("HTTP {code}: {text}")))
            }
            Err(e) => Err(self.unreachable(e.to_string())),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<std::result::Result<T, SafeRefusal>> {
        self.finish(self.agent.get(&format!("{}{path}", self.base)).call())
    }

    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<std::result::Result<T, SafeRefusal>> {
        self.finish(self.agent.post(&format!("{}{path}", self.base)).send_json(body))
    }
}
