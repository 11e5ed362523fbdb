//! The terminal against a hostile card, in process: a reader whose card
//! answers what the test chooses (`transport::hostile::HostileReader`).

mod common;

use cardvault::card::CardClient;
use cardvault::transport::hostile::{answers, Answer, HostileReader, Seen};
use cardvault::transport::sim::SimReader;
use cardvault::transport::Reader;
use common::*;
use std::sync::Arc;

fn sim(dir: &std::path::Path, name: &str, profile: &str) -> SimReader {
    SimReader::open(dir, name, profile, None).unwrap()
}

fn client(r: &mut dyn Reader) -> cardvault::Result<CardClient<'_>> {
    CardClient::open(r, cardvault::card::SessionOptions::default())
}

fn status_against(answer: impl FnMut(&[u8]) -> Answer) -> (cardvault::Error, Arc<Seen>) {
    let dir = temp_dir("hostile-case");
    let seen = Seen::new();
    let mut r = HostileReader::new(sim(&dir, "c", "main"), seen.clone(), answer);
    let e = client(&mut r).and_then(|mut c| c.overview().map(|_| ())).unwrap_err();
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    (e, seen)
}

#[test]
fn a_card_answering_9000_without_data_to_everything_is_not_a_cardvault_card() {
    let (e, seen) = status_against(|_| Answer::Reply(vec![0x90, 0x00]));
    assert_eq!(e.exit_code(), 4, "{e}");
    assert_eq!(e.kind(), "not_cardvault");
    assert!(
        e.to_string().contains("is not a cardvault card") && e.to_string().contains("9000 with no data"),
        "{e}"
    );
    // Nothing after SELECT.
    assert_eq!(seen.apdus(), 1);
    // Another applet's FCI, a bare 6D00, a malformed answer: the same.
    for answer in [
        answers::with_sw(&[0x6F, 0x08, 0x84, 0x06, 0xA0, 0, 0, 0, 0x03, 0x08], 0x9000),
        vec![0x6D, 0x00],
        vec![0x61, 0x10],
    ] {
        let (e, seen) = status_against(move |_| Answer::Reply(answer.clone()));
        assert_eq!(e.exit_code(), 4, "{e}");
        assert!(e.to_string().contains("is not a cardvault card"), "{e}");
        assert!(seen.apdus() <= 2);
    }
}
