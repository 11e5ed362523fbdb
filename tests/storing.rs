//! Storing authorization (SPEC 3.4, NTT 004): a provider's application on a
//! `services` card is written only when the issuer and the provider both
//! signed for this card, this data and the card's own challenge; everything
//! else is refused with nothing changed on the card, and the vault's records
//! match what the card holds.

mod common;

use applet_sim::test_registrars as reg;
use cardvault::apdu::{Command, StatusWord};
use cardvault::card::{CardClient, SessionOptions};
use cardvault::transport::sim::SimReader;
use cardvault::vault::Vault;
use cardvault::workflow::storing::{self, PartyCredentials, StoringFile};
use cardvault_proto::crypto::{sha256, KeyPair};
use cardvault_proto::storing::{
    issue_party_certificate, issue_registrar_root, Authorization, DataCertificate, Operation, Party, RegistrarRoots,
    Sa, Sar, StoringDataInfo,
};
use common::*;
use openssl::asn1::Asn1Time;
use openssl::x509::X509;
use std::path::Path;

const MEDICAL: u8 = 4;
const LOYALTY: u8 = 5;
const ID_APP: u8 = 3;
const PAGE: usize = 256;

fn with_card<T>(home: &Path, name: &str, f: impl FnOnce(&mut CardClient<'_>) -> T) -> T {
    let mut r = SimReader::open(home, name, "services", None).unwrap();
    let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
    f(&mut c)
}

fn issuer() -> PartyCredentials {
    PartyCredentials::from_pem(Party::Issuer, reg::ISSUER_KEY_PEM, reg::ISSUER_PEM).unwrap()
}

fn provider() -> PartyCredentials {
    PartyCredentials::from_pem(Party::Provider, reg::PROVIDER_KEY_PEM, reg::PROVIDER_PEM).unwrap()
}

fn roots() -> RegistrarRoots {
    RegistrarRoots {
        issuer_registrar: X509::from_pem(reg::ISSUER_REGISTRAR_PEM).unwrap(),
        data_registrar: X509::from_pem(reg::DATA_REGISTRAR_PEM).unwrap(),
    }
}

fn issuer_roots() -> Vec<X509> {
    vec![applet_sim::test_issuer::root()]
}

fn party_key(pem: &[u8]) -> KeyPair {
    KeyPair::from_pem(pem).unwrap()
}

/// The bytes of application `app` on card `name`.
fn app_bytes(home: &Path, name: &str, app: u8) -> Vec<u8> {
    let s = state(home, name);
    let a = s.applications.iter().find(|a| a.id == app).unwrap();
    let start = a.first_page as usize * PAGE;
    s.memory[start..start + a.page_count as usize * PAGE].to_vec()
}

/// What must not change when the card refuses: memory and change flags.
/// (A card that does not exist yet is made first.)
fn card_data(home: &Path, name: &str) -> (Vec<u8>, Vec<u8>) {
    with_card(home, name, |_| ());
    let s = state(home, name);
    (s.memory.clone(), s.change_flags.clone())
}

fn vault(home: &Path) -> Vault {
    Vault::open(&home.join("vault.sqlite")).unwrap()
}

fn request(home: &Path, name: &str, sdi: &StoringDataInfo) -> StoringFile {
    with_card(home, name, |c| storing::request(c, PIN.as_bytes(), sdi).unwrap())
}

/// The whole exchange through the workflow, `first` countersigning.
fn authorize(req: &StoringFile, first: Party) -> StoringFile {
    let (a, b) = match first {
        Party::Issuer => (issuer(), provider()),
        Party::Provider => (provider(), issuer()),
    };
    let sar = storing::countersign(req, &a, &issuer_roots()).unwrap();
    storing::authorize(&sar, &b, &roots(), &issuer_roots()).unwrap()
}

fn apply(home: &Path, name: &str, sa: &StoringFile, data: Option<&[u8]>) -> cardvault::Result<()> {
    let mut v = vault(home);
    with_card(home, name, |c| {
        storing::apply(c, PIN.as_bytes(), sa, data, &mut v).map(|_| ())
    })
}

fn record(data: &[u8]) -> StoringDataInfo {
    storing::store_info(MEDICAL, data, None).unwrap()
}

/// Present a raw authorization to the card (past the terminal's own
/// checks): the card's verdict.
fn present(home: &Path, name: &str, app: u8, auth: &Authorization, data: &[u8]) -> StatusWord {
    with_card(home, name, |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        c.store_under_authorization(app, auth, data).unwrap()
    })
}

/// A card request made directly (no workflow): the request and the card's certificate.
fn card_request(home: &Path, name: &str, sdi: &StoringDataInfo) -> cardvault_proto::storing::StoringRequest {
    with_card(home, name, |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        c.storing_request(sdi).unwrap().request
    })
}

fn sa_of(req: cardvault_proto::storing::StoringRequest) -> Authorization {
    let i = issuer();
    let p = provider();
    let sar = Sar::sign(req, Party::Issuer, i.certificate, &i.key).unwrap();
    Authorization::Sa(Sa::sign(sar, Party::Provider, p.certificate, &p.key).unwrap())
}

fn expect_stored(home: &Path, name: &str, app: u8, data: &[u8]) {
    let got = app_bytes(home, name, app);
    assert_eq!(&got[..data.len()], data);
    assert!(
        got[data.len()..].iter().all(|b| *b == 0),
        "the rest of the application is cleared"
    );
}

/// The vault's latest record of each application matches what the card holds.
fn records_match_card(home: &Path, name: &str) {
    let number = state(home, name).card_number.clone();
    for app in [ID_APP, MEDICAL, LOYALTY] {
        let bytes = app_bytes(home, name, app);
        match vault(home).latest_storing(&number, app).unwrap() {
            Some(r) if r.operation == "store" => {
                let n = r.data_size as usize;
                assert_eq!(cardvault_proto::to_hex(&sha256(&bytes[..n])), r.data_hash, "app {app}");
                assert!(bytes[n..].iter().all(|b| *b == 0), "app {app}");
            }
            _ => assert!(bytes.iter().all(|b| *b == 0), "app {app} holds data without a record"),
        }
    }
}

#[test]
fn both_exchange_orders_store_data_and_the_vault_records_who_signed() {
    let home = temp_dir("storing-orders");
    for (first, data) in [
        (Party::Issuer, b"blood type 0+, allergies: none".to_vec()),
        (Party::Provider, vec![0x5A; 3 * PAGE + 17]),
    ] {
        let req = request(&home, "card", &record(&data));
        let sa = authorize(&req, first);
        assert_eq!(sa.signers.len(), 2);
        apply(&home, "card", &sa, Some(&data)).unwrap();
        expect_stored(&home, "card", MEDICAL, &data);
        let r = vault(&home).latest_storing(&req.card_number, MEDICAL).unwrap().unwrap();
        assert_eq!(r.first_party, first.as_str());
        assert_eq!(
            r.issuer.as_deref(),
            Some("cardvault TEST issuer root - NOT FOR PRODUCTION")
        );
        assert_eq!(r.provider.as_deref(), Some(reg::PROVIDER_NAME));
        assert_eq!(r.request_id, req.request_id().unwrap());
        assert!(r.sa_id.is_some());
        records_match_card(&home, "card");
    }
    assert_eq!(vault(&home).list_storing(None).unwrap().len(), 2);
}

#[test]
fn delete_works_the_same_way_and_names_the_data_it_deletes() {
    let home = temp_dir("storing-delete");
    let data = b"vaccination record".to_vec();
    let req = request(&home, "card", &record(&data));
    apply(&home, "card", &authorize(&req, Party::Issuer), Some(&data)).unwrap();
    let number = req.card_number.clone();

    // A delete naming other data is refused by the card.
    let wrong = storing::delete_info_for(MEDICAL, b"something else").unwrap();
    let before = card_data(&home, "card");
    let req = request(&home, "card", &wrong);
    let e = apply(&home, "card", &authorize(&req, Party::Provider), None).unwrap_err();
    assert!(e.to_string().contains("6A80"), "{e}");
    assert_eq!(card_data(&home, "card"), before);

    // The delete of what the vault says is there.
    let del = storing::delete_info(&vault(&home), &number, MEDICAL).unwrap();
    assert_eq!(del.op, Operation::Delete);
    let req = request(&home, "card", &del);
    apply(&home, "card", &authorize(&req, Party::Provider), None).unwrap();
    assert!(app_bytes(&home, "card", MEDICAL).iter().all(|b| *b == 0));
    let r = vault(&home).latest_storing(&number, MEDICAL).unwrap().unwrap();
    assert_eq!(r.operation, "delete");
    records_match_card(&home, "card");
    // Nothing left to delete.
    assert!(storing::delete_info(&vault(&home), &number, MEDICAL).is_err());
}

/// A blank card leaves the factory with no signing key and no registrar
/// roots; `cardvault issue` has it generate its signing key, certifies it
/// (card number, role) and installs the registrar roots with the issuer
/// root, and the issued card then stores data under authorization.
#[test]
fn a_card_issued_from_blank_by_cardvault_issue_stores_data_under_authorization() {
    let home = temp_dir("storing-issued");
    let name = "fresh-dora-main";
    // The blank card in the feeder: the services application table.
    drop(SimReader::open(&home, name, "blank-services", None).unwrap());
    let blank = state(&home, name);
    assert!(blank.storing.private_key.is_empty() && blank.storing.certificate.is_empty());
    assert!(blank.storing.issuer_registrar_root.is_empty() && blank.storing.data_registrar_root.is_empty());
    let csv = home.join("holders.csv");
    std::fs::write(
        &csv,
        format!("holder,pin,member_number,expiry\ndora,{PIN},M-9,2031-01\n"),
    )
    .unwrap();
    let o = run(cv(&home)
        .args([
            "-r",
            "sim:fresh",
            "issue",
            "--profile",
            "main",
            "--no-domain",
            "--holders",
        ])
        .arg(&csv));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let issued = state(&home, name);
    assert!(issued.issued);
    let signer = cardvault_proto::storing::verify_card_signing_key(&issuer_roots(), &issued.storing.certificate)
        .expect("the signing certificate verifies under the issuer root");
    assert_eq!(
        (signer.card_number.as_str(), signer.role.as_str()),
        (issued.card_number.as_str(), "main")
    );
    assert_eq!(
        signer.public_key,
        KeyPair::from_private(&issued.storing.private_key)
            .unwrap()
            .public_bytes()
    );
    assert_eq!(issued.storing.issuer_registrar_root, reg::issuer_registrar_der());
    assert_eq!(issued.storing.data_registrar_root, reg::data_registrar_der());
    // The exchange, the issuer countersigning first.
    let data = b"blood group 0+; issued from blank";
    let req = request(&home, name, &record(data));
    let sa = authorize(&req, Party::Issuer);
    apply(&home, name, &sa, Some(data)).unwrap();
    expect_stored(&home, name, MEDICAL, data);
    records_match_card(&home, name);
}

#[test]
fn the_provider_alone_authorizes_only_where_the_application_allows_it() {
    let home = temp_dir("storing-alone");
    let data = b"loyalty points: 120".to_vec();
    // Loyalty (provider_alone): the provider's SAR is enough.
    let sdi = storing::store_info(LOYALTY, &data, None).unwrap();
    let sar = storing::countersign(&request(&home, "card", &sdi), &provider(), &issuer_roots()).unwrap();
    apply(&home, "card", &sar, Some(&data)).unwrap();
    expect_stored(&home, "card", LOYALTY, &data);
    let r = vault(&home).latest_storing(&sar.card_number, LOYALTY).unwrap().unwrap();
    assert_eq!(
        (r.provider.as_deref(), r.issuer.as_deref(), r.sa_id),
        (Some(reg::PROVIDER_NAME), None, None)
    );

    // Medical record: the provider alone is not enough, and neither is the issuer alone.
    for who in [provider(), issuer()] {
        let before = card_data(&home, "card");
        let sar = storing::countersign(&request(&home, "card", &record(&data)), &who, &issuer_roots()).unwrap();
        let e = apply(&home, "card", &sar, Some(&data)).unwrap_err();
        assert!(e.to_string().contains("6982"), "{e}");
        assert_eq!(card_data(&home, "card"), before);
    }
    // The ID is the issuer's alone: the provider may not sign for it.
    let sdi = storing::store_info(ID_APP, b"ID 42", None).unwrap();
    let before = card_data(&home, "card");
    let sa = authorize(&request(&home, "card", &sdi), Party::Issuer);
    assert!(apply(&home, "card", &sa, Some(b"ID 42")).is_err());
    assert_eq!(card_data(&home, "card"), before);
    let sar = storing::countersign(&request(&home, "card", &sdi), &issuer(), &issuer_roots()).unwrap();
    apply(&home, "card", &sar, Some(b"ID 42")).unwrap();
    expect_stored(&home, "card", ID_APP, b"ID 42");
    records_match_card(&home, "card");
}

#[test]
fn holder_pin_write_memory_into_an_authorized_application_is_refused() {
    let home = temp_dir("storing-write");
    let before = card_data(&home, "card");
    with_card(&home, "card", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        // The issue's APDU: 80 D6 00 44 04 DE AD BE EF (page 68, the medical record).
        for (page, len) in [(68u16, 4usize), (36, 16), (196, 256), (33, 6 * PAGE)] {
            let sw = c.transmit(&Command::write_memory(page, &vec![0xDE; len])).unwrap().sw;
            assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied, "page {page}");
        }
        // The holder's own application is written as before.
        c.write_memory(4, &[1; 300]).unwrap();
    });
    let after = card_data(&home, "card");
    assert_eq!(after.0[..4 * PAGE], before.0[..4 * PAGE]);
    assert_eq!(after.0[36 * PAGE..], before.0[36 * PAGE..]);
}

#[test]
fn without_authorization_or_with_anothers_nothing_changes() {
    let home = temp_dir("storing-refused");
    let data = b"x-ray 2026-11-30".to_vec();
    let other = b"x-ray 2026-12-01".to_vec();

    // No authorization at all: garbage, and a request without an outstanding challenge.
    let before = card_data(&home, "a");
    let sw = with_card(&home, "a", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        c.transmit(&Command::store_data_under_authorization(MEDICAL, &[1, 2, 3], &data))
            .unwrap()
            .sw
    });
    assert_ne!(sw, StatusWord::Ok);
    assert_eq!(card_data(&home, "a"), before);

    // An SA for card b, presented to card a.
    let req_b = request(&home, "b", &record(&data));
    let sa_b = authorize(&req_b, Party::Issuer);
    let _ = request(&home, "a", &record(&data));
    let e = apply(&home, "a", &sa_b, Some(&data)).unwrap_err();
    assert!(
        e.to_string().contains(&format!("for card {}", req_b.card_number)),
        "{e}"
    );
    let raw_b = Authorization::parse(&cardvault_proto::from_hex(&sa_b.blob).unwrap()).unwrap();
    assert_eq!(
        present(&home, "a", MEDICAL, &raw_b, &data),
        StatusWord::SecurityStatusNotSatisfied
    );
    assert_eq!(card_data(&home, "a"), before);

    // For another application: the medical record's SA sent for the loyalty application.
    let auth = sa_of(card_request(&home, "a", &record(&data)));
    assert_eq!(
        present(&home, "a", LOYALTY, &auth, &data),
        StatusWord::SecurityStatusNotSatisfied
    );
    assert_eq!(card_data(&home, "a"), before);

    // For another data hash: the terminal refuses, and so does the card.
    let sa = authorize(&request(&home, "a", &record(&data)), Party::Provider);
    let e = apply(&home, "a", &sa, Some(&other)).unwrap_err();
    assert!(e.to_string().contains("not the data the authorization names"), "{e}");
    let auth = sa_of(card_request(&home, "a", &record(&data)));
    assert_eq!(present(&home, "a", MEDICAL, &auth, &other), StatusWord::WrongData);
    assert_eq!(card_data(&home, "a"), before);

    // A replayed SA: good once, then the challenge is gone.
    let sa = authorize(&request(&home, "a", &record(&data)), Party::Issuer);
    apply(&home, "a", &sa, Some(&data)).unwrap();
    let stored = card_data(&home, "a");
    let e = apply(&home, "a", &sa, Some(&data)).unwrap_err();
    assert!(e.to_string().contains("6982"), "{e}");
    // Also after a newer request: the old SA names the old challenge.
    let _ = request(&home, "a", &record(&other));
    assert!(apply(&home, "a", &sa, Some(&data)).is_err());
    assert_eq!(card_data(&home, "a"), stored);
    // A refused SA used the challenge: the right SA for it fails afterwards.
    let req = card_request(&home, "a", &record(&other));
    assert_eq!(
        present(&home, "a", LOYALTY, &sa_of(req.clone()), &other),
        StatusWord::SecurityStatusNotSatisfied
    );
    assert_eq!(
        present(&home, "a", MEDICAL, &sa_of(req), &other),
        StatusWord::SecurityStatusNotSatisfied
    );
    assert_eq!(card_data(&home, "a"), stored);
    records_match_card(&home, "a");
    assert_eq!(vault(&home).list_storing(None).unwrap().len(), 1);
}

#[test]
fn forged_wrong_party_and_expired_signatures_are_refused() {
    let home = temp_dir("storing-forged");
    let data = b"prescription".to_vec();
    let before = card_data(&home, "card");
    let i = issuer();
    let p = provider();
    let now = Asn1Time::days_from_now(0).unwrap();

    // A provider of the same name certified by another "data registrar".
    let rogue_key = KeyPair::generate().unwrap();
    let rogue_root = issue_registrar_root(&rogue_key, "rogue registrar", "20250101000000Z", "20500101000000Z").unwrap();
    let rk = KeyPair::generate().unwrap();
    let rogue_dpr = issue_party_certificate(
        &rogue_key,
        &rogue_root,
        &rk.public_bytes(),
        Party::Provider,
        reg::PROVIDER_NAME,
        &now,
        30,
    )
    .unwrap()
    .to_der()
    .unwrap();
    let req = card_request(&home, "card", &record(&data));
    let sar = Sar::sign(req, Party::Issuer, i.certificate.clone(), &i.key).unwrap();
    let sa = Authorization::Sa(Sa::sign(sar, Party::Provider, rogue_dpr, &rk).unwrap());
    assert_eq!(
        present(&home, "card", MEDICAL, &sa, &data),
        StatusWord::SecurityStatusNotSatisfied
    );
    // The terminal of the issuer refuses that SAR too.
    let req = request(&home, "card", &record(&data));
    let rogue_dpr_pem = X509::from_der(
        &issue_party_certificate(
            &rogue_key,
            &rogue_root,
            &rk.public_bytes(),
            Party::Provider,
            "p",
            &now,
            30,
        )
        .unwrap()
        .to_der()
        .unwrap(),
    )
    .unwrap()
    .to_pem()
    .unwrap();
    let rogue = PartyCredentials::from_pem(Party::Provider, &rk.to_pem().unwrap(), &rogue_dpr_pem).unwrap();
    let rogue_sar = storing::countersign(&req, &rogue, &issuer_roots()).unwrap();
    let e = storing::authorize(&rogue_sar, &i, &roots(), &issuer_roots()).unwrap_err();
    assert!(e.to_string().contains("data registrar"), "{e}");

    // An SAR signed by the wrong party: the provider's key under the issuer's certificate.
    let req = card_request(&home, "card", &record(&data));
    let sar = Sar::sign(req, Party::Issuer, i.certificate.clone(), &p.key).unwrap();
    let sa = Authorization::Sa(Sa::sign(sar, Party::Provider, p.certificate.clone(), &p.key).unwrap());
    assert_eq!(
        present(&home, "card", MEDICAL, &sa, &data),
        StatusWord::SecurityStatusNotSatisfied
    );
    // ... and by another issuer (certified, but not this card's).
    let ok = KeyPair::generate().unwrap();
    let irk = party_key(reg::ISSUER_REGISTRAR_KEY_PEM);
    let other_irc = issue_party_certificate(
        &irk,
        &roots().issuer_registrar,
        &ok.public_bytes(),
        Party::Issuer,
        "another issuer",
        &now,
        30,
    )
    .unwrap()
    .to_der()
    .unwrap();
    let req = card_request(&home, "card", &record(&data));
    let sar = Sar::sign(req, Party::Issuer, other_irc, &ok).unwrap();
    let sa = Authorization::Sa(Sa::sign(sar, Party::Provider, p.certificate.clone(), &p.key).unwrap());
    assert_eq!(
        present(&home, "card", MEDICAL, &sa, &data),
        StatusWord::SecurityStatusNotSatisfied
    );

    // An expired DPR of the right registrar.
    let drk = party_key(reg::DATA_REGISTRAR_KEY_PEM);
    let long_ago = Asn1Time::from_unix(1_735_689_600).unwrap(); // 2025-01-01
    let expired = issue_party_certificate(
        &drk,
        &roots().data_registrar,
        &p.key.public_bytes(),
        Party::Provider,
        reg::PROVIDER_NAME,
        &long_ago,
        1,
    )
    .unwrap()
    .to_der()
    .unwrap();
    let req = card_request(&home, "card", &record(&data));
    let sar = Sar::sign(req, Party::Provider, expired, &p.key).unwrap();
    let sa = Authorization::Sa(Sa::sign(sar, Party::Issuer, i.certificate.clone(), &i.key).unwrap());
    assert_eq!(
        present(&home, "card", MEDICAL, &sa, &data),
        StatusWord::SecurityStatusNotSatisfied
    );

    assert_eq!(card_data(&home, "card"), before);
    // And the genuine SA for the same data still works with a fresh request.
    let req = card_request(&home, "card", &record(&data));
    assert_eq!(present(&home, "card", MEDICAL, &sa_of(req), &data), StatusWord::Ok);
    expect_stored(&home, "card", MEDICAL, &data);
}

#[test]
fn data_must_match_its_data_certificate() {
    let home = temp_dir("storing-sdci");
    let drk = party_key(reg::DATA_REGISTRAR_KEY_PEM);
    let registrar = roots().data_registrar;
    let data = b"genome summary v1".to_vec();
    let cert = DataCertificate::sign(&drk, "genome-1", reg::PROVIDER_NAME, &data).unwrap();
    let sdi = storing::store_info(MEDICAL, &data, Some((&cert, &registrar))).unwrap();
    assert_eq!(sdi.data_cert_id, "genome-1");
    // Other data under that certificate, and a certificate not from the data registrar.
    let e = storing::store_info(MEDICAL, b"genome summary v2", Some((&cert, &registrar))).unwrap_err();
    assert!(
        e.to_string().contains("does not match its data certificate 'genome-1'"),
        "{e}"
    );
    let forged = DataCertificate::sign(&KeyPair::generate().unwrap(), "genome-1", reg::PROVIDER_NAME, &data).unwrap();
    assert!(storing::store_info(MEDICAL, &data, Some((&forged, &registrar))).is_err());
    // The certified data goes through, with its id in the record.
    let req = request(&home, "card", &sdi);
    apply(&home, "card", &authorize(&req, Party::Provider), Some(&data)).unwrap();
    let r = vault(&home).latest_storing(&req.card_number, MEDICAL).unwrap().unwrap();
    assert_eq!(r.data_cert_id.as_deref(), Some("genome-1"));
}

#[test]
fn a_file_of_the_wrong_step_or_edited_is_refused_naming_what_does_not_match() {
    let home = temp_dir("storing-files");
    let data = b"abc".to_vec();
    let req = request(&home, "card", &record(&data));
    // authorize takes a SAR, not the card's request.
    let e = storing::authorize(&req, &provider(), &roots(), &issuer_roots()).unwrap_err();
    assert!(e.to_string().contains("this file is a card's storing request"), "{e}");
    let sar = storing::countersign(&req, &issuer(), &issuer_roots()).unwrap();
    // countersign takes the request, not a SAR; and the issuer cannot sign twice.
    let e = storing::countersign(&sar, &provider(), &issuer_roots()).unwrap_err();
    assert!(
        e.to_string().contains("this file is a storing authorization request"),
        "{e}"
    );
    let e = storing::authorize(&sar, &issuer(), &roots(), &issuer_roots()).unwrap_err();
    assert!(e.to_string().contains("must be signed by the provider"), "{e}");
    // An edited summary.
    let mut edited = sar.clone();
    edited.application = LOYALTY;
    let e = storing::authorize(&edited, &provider(), &roots(), &issuer_roots()).unwrap_err();
    assert!(e.to_string().contains("application 5"), "{e}");
    // The JSON round trip keeps the file.
    let json = serde_json::to_string(&sar).unwrap();
    assert_eq!(serde_json::from_str::<StoringFile>(&json).unwrap(), sar);
    // A card not of a trusted issuer: no trusted roots.
    let e = storing::countersign(&req, &issuer(), &[]).unwrap_err();
    assert!(e.to_string().contains("not from a trusted issuer"), "{e}");
}

/// The operator's story on the command line: two registrars, the issuer's
/// and a provider's storing keys, certified; the holder's card requests, the
/// provider countersigns, the issuer authorizes, the holder applies; `store
/// list` and `status` show it. Every step in JSON.
#[test]
fn the_command_line_runs_the_exchange_and_lists_it() {
    let home = temp_dir("storing-cli");
    with_card(&home, "c", |_| ()); // a services card
    let h = |p: &str| home.join(p).display().to_string();
    let ok = |args: &[&str]| {
        let o = run(cv(&home).args(args));
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        json(&o)
    };
    // The test issuer registrar, so that the card (which trusts it) accepts the IRC;
    // a fresh data registrar would not be on the card, so the provider uses the test one.
    std::fs::create_dir_all(home.join("ireg")).unwrap();
    std::fs::write(home.join("ireg/root.pem"), reg::ISSUER_REGISTRAR_PEM).unwrap();
    std::fs::write(home.join("ireg/root-key.pem"), reg::ISSUER_REGISTRAR_KEY_PEM).unwrap();
    std::fs::write(home.join("ireg/registrar.json"), r#"{"kind":"issuer","name":"test"}"#).unwrap();
    std::fs::create_dir_all(home.join("dreg")).unwrap();
    std::fs::write(home.join("dreg/root.pem"), reg::DATA_REGISTRAR_PEM).unwrap();
    std::fs::write(home.join("dreg/root-key.pem"), reg::DATA_REGISTRAR_KEY_PEM).unwrap();
    std::fs::write(home.join("dreg/registrar.json"), r#"{"kind":"data","name":"test"}"#).unwrap();
    // registrar init works on its own (a new root).
    let r = ok(&["--json", "registrar", "init", "--kind", "data", "-o", &h("newreg")]);
    assert_eq!(r["kind"], "data");

    let issuer_name = "cardvault TEST issuer root - NOT FOR PRODUCTION";
    ok(&[
        "--json",
        "provider",
        "init",
        "--as",
        "issuer",
        "--name",
        issuer_name,
        "-o",
        &h("issuer"),
    ]);
    ok(&[
        "--json",
        "provider",
        "init",
        "--name",
        reg::PROVIDER_NAME,
        "-o",
        &h("prov"),
    ]);
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["prov/key.pem", "newreg/root-key.pem"] {
            let mode = std::fs::metadata(home.join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        // Never replaced without --force.
        let o = run(cv(&home).args(["provider", "init", "--name", "x", "-o", &h("prov")]));
        assert!(
            !o.status.success() && stderr(&o).contains("use --force"),
            "{}",
            stderr(&o)
        );
    }
    // A data registrar does not certify issuers.
    let o = run(cv(&home).args(["registrar", "certify", "--registrar", &h("dreg"), &h("issuer")]));
    assert!(
        !o.status.success() && stderr(&o).contains("certifies only providers"),
        "{}",
        stderr(&o)
    );
    ok(&[
        "--json",
        "registrar",
        "certify",
        "--registrar",
        &h("ireg"),
        &h("issuer"),
    ]);
    ok(&["--json", "registrar", "certify", "--registrar", &h("dreg"), &h("prov")]);
    // Both parties know both registrar roots.
    std::fs::copy(home.join("dreg/root.pem"), home.join("issuer/data-registrar.pem")).unwrap();
    std::fs::copy(home.join("ireg/root.pem"), home.join("prov/issuer-registrar.pem")).unwrap();

    std::fs::write(home.join("record.txt"), b"allergy: penicillin").unwrap();
    ok(&[
        "--json",
        "registrar",
        "certify",
        "--registrar",
        &h("dreg"),
        "--data",
        &h("record.txt"),
        "--id",
        "rec-7",
        "--provider",
        reg::PROVIDER_NAME,
        "-o",
        &h("record.sdci"),
    ]);
    let trust = repo_path("fixtures/issuer/test-root.pem").display().to_string();
    let req = ok(&[
        "--json",
        "-r",
        "sim:c",
        "store",
        "request",
        "--app",
        "4",
        "--op",
        "store",
        "--data",
        &h("record.txt"),
        "--data-cert",
        &h("record.sdci"),
        "--data-registrar",
        &h("dreg/root.pem"),
        "--pin",
        "env:P",
        "-o",
        &h("req.json"),
    ]);
    assert_eq!(
        (req["step"].as_str(), req["data_cert_id"].as_str()),
        (Some("request"), Some("rec-7"))
    );
    // The wrong step: authorize takes a SAR.
    let o = run(cv(&home).args([
        "--trust",
        &trust,
        "store",
        "authorize",
        "--as",
        "issuer",
        "--key",
        &h("issuer"),
        &h("req.json"),
        "-o",
        &h("x.json"),
    ]));
    assert!(
        !o.status.success() && stderr(&o).contains("this file is a card's storing request"),
        "{}",
        stderr(&o)
    );
    ok(&[
        "--json",
        "--trust",
        &trust,
        "store",
        "countersign",
        "--as",
        "provider",
        "--key",
        &h("prov"),
        &h("req.json"),
        "-o",
        &h("sar.json"),
    ]);
    let sa = ok(&[
        "--json",
        "--trust",
        &trust,
        "store",
        "authorize",
        "--as",
        "issuer",
        "--key",
        &h("issuer"),
        &h("sar.json"),
        "-o",
        &h("sa.json"),
    ]);
    assert_eq!(sa["signers"].as_array().unwrap().len(), 2);
    let applied = ok(&[
        "--json",
        "-r",
        "sim:c",
        "store",
        "apply",
        "--authorization",
        &h("sa.json"),
        "--data",
        &h("record.txt"),
        "--pin",
        "env:P",
    ]);
    assert_eq!(applied["record"]["data_cert_id"], "rec-7");
    expect_stored(&home, "c", MEDICAL, b"allergy: penicillin");
    records_match_card(&home, "c");
    let list = ok(&[
        "--json",
        "store",
        "list",
        "--card",
        applied["card_number"].as_str().unwrap(),
    ]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["provider"], reg::PROVIDER_NAME);
    let text = stdout(&run(cv(&home).args(["-r", "sim:c", "store", "list"])));
    assert!(text.contains("signed by issuer") && text.contains("rec-7"), "{text}");
    // status shows each application's owner and rule.
    let st = ok(&["--json", "-r", "sim:c", "status"]);
    let apps = st["applications"].as_array().unwrap();
    assert_eq!(apps[3]["owner"], reg::PROVIDER_NAME);
    assert_eq!(apps[3]["rule"], "authorized");
    assert_eq!(apps[2]["rule"], "issuer-only");
    let text = stdout(&run(cv(&home).args(["-r", "sim:c", "status"])));
    assert!(
        text.contains("application  5: owner cardvault TEST provider, authorized, the provider alone may authorize"),
        "{text}"
    );
}

/// Through pcscd + vpcd + applet-sim: both exchange orders store data, delete
/// works the same way, the provider alone only where the application allows
/// it, an SA for the other card is refused; the card files and the vault agree.
#[test]
fn through_pcscd_both_orders_delete_and_provider_alone() {
    use common::stack::*;
    let test = "through_pcscd_both_orders_delete_and_provider_alone";
    let Some(stack) = PcscStack::start(test) else {
        return;
    };
    let dir = temp_dir("storing-pcsc");
    let (a, b) = (dir.join("a.card"), dir.join("b.card"));
    let _sim = stack.sim(&[(0, &a, "services"), (1, &b, "services")]);
    let opts = cardvault::reader::ReaderOptions {
        data_dir: dir.to_path_buf(),
        config: cardvault::config::Config::default(),
        extended_flag: None,
        wait: None,
        create_cards: false,
    };
    let mut v = Vault::open(&dir.join("vault.sqlite")).unwrap();
    let on = |reader: &str, f: &mut dyn FnMut(&mut CardClient<'_>) -> cardvault::Result<StoringFile>| {
        let mut r = cardvault::reader::open(Some(reader), &opts).unwrap();
        let trust = cardvault::trust::Trust::from_files(&[test_root()]).unwrap();
        let mut c = CardClient::open(r.as_mut(), SessionOptions::trusting(trust)).unwrap();
        f(&mut c)
    };
    let mem = |path: &Path, app: u8| {
        let s = applet_sim::state::Store::peek(path).unwrap();
        let a = s.applications.iter().find(|x| x.id == app).unwrap();
        let start = a.first_page as usize * PAGE;
        s.memory[start..start + a.page_count as usize * PAGE].to_vec()
    };

    for (first, data) in [(Party::Issuer, vec![0x11; 2000]), (Party::Provider, vec![0x22; 5000])] {
        let sdi = record(&data);
        let req = on(READER0, &mut |c| storing::request(c, PIN.as_bytes(), &sdi)).unwrap();
        let sa = authorize(&req, first);
        let mut r = cardvault::reader::open(Some(READER0), &opts).unwrap();
        let trust = cardvault::trust::Trust::from_files(&[test_root()]).unwrap();
        let mut c = CardClient::open(r.as_mut(), SessionOptions::trusting(trust)).unwrap();
        storing::apply(&mut c, PIN.as_bytes(), &sa, Some(&data), &mut v).unwrap();
        drop(c);
        let got = mem(&a, MEDICAL);
        assert_eq!(&got[..data.len()], &data[..]);
        assert!(got[data.len()..].iter().all(|x| *x == 0));
    }
    let number = applet_sim::state::Store::peek(&a).unwrap().card_number.clone();
    let latest = v.latest_storing(&number, MEDICAL).unwrap().unwrap();
    assert_eq!((latest.first_party.as_str(), latest.data_size), ("provider", 5000));

    // The SA of card a, on card b: refused, card b unchanged.
    let before_b = applet_sim::state::Store::peek(&b).unwrap().memory.clone();
    let data = vec![0x33; 100];
    let sdi = record(&data);
    let req = on(READER0, &mut |c| storing::request(c, PIN.as_bytes(), &sdi)).unwrap();
    let sa = authorize(&req, Party::Issuer);
    on(READER1, &mut |c| storing::request(c, PIN.as_bytes(), &sdi)).unwrap();
    let mut r = cardvault::reader::open(Some(READER1), &opts).unwrap();
    let trust = cardvault::trust::Trust::from_files(&[test_root()]).unwrap();
    let mut c = CardClient::open(r.as_mut(), SessionOptions::trusting(trust)).unwrap();
    let e = storing::apply(&mut c, PIN.as_bytes(), &sa, Some(&data), &mut v).unwrap_err();
    assert!(e.to_string().contains(&format!("for card {number}")), "{e}");
    drop(c);
    drop(r);
    assert_eq!(applet_sim::state::Store::peek(&b).unwrap().memory, before_b);

    // Delete what the vault says card a holds.
    let del = storing::delete_info(&v, &number, MEDICAL).unwrap();
    let req = on(READER0, &mut |c| storing::request(c, PIN.as_bytes(), &del)).unwrap();
    let sa = authorize(&req, Party::Provider);
    let mut r = cardvault::reader::open(Some(READER0), &opts).unwrap();
    let trust = cardvault::trust::Trust::from_files(&[test_root()]).unwrap();
    let mut c = CardClient::open(r.as_mut(), SessionOptions::trusting(trust)).unwrap();
    storing::apply(&mut c, PIN.as_bytes(), &sa, None, &mut v).unwrap();
    // The provider alone: loyalty yes, the medical record no.
    for (app, allowed) in [(LOYALTY, true), (MEDICAL, false)] {
        let data = b"points: 7".to_vec();
        let sdi = storing::store_info(app, &data, None).unwrap();
        let req = storing::request(&mut c, PIN.as_bytes(), &sdi).unwrap();
        let sar = storing::countersign(&req, &provider(), &issuer_roots()).unwrap();
        let r = storing::apply(&mut c, PIN.as_bytes(), &sar, Some(&data), &mut v);
        assert_eq!(r.is_ok(), allowed, "app {app}: {r:?}");
    }
    drop(c);
    assert!(mem(&a, MEDICAL).iter().all(|x| *x == 0));
    assert_eq!(&mem(&a, LOYALTY)[..9], b"points: 7");
    let rows = v.list_storing(Some(&number)).unwrap();
    let ops: Vec<(u8, &str)> = rows.iter().map(|r| (r.application, r.operation.as_str())).collect();
    assert_eq!(
        ops,
        [
            (MEDICAL, "store"),
            (MEDICAL, "store"),
            (MEDICAL, "delete"),
            (LOYALTY, "store")
        ]
    );
}

/// The card pulled at every APDU of store and of delete (the APDU processed
/// and its answer lost, or never delivered): the application holds the old
/// data or the new, never a mix; a retry with a fresh request completes, and
/// then the vault's records match the card.
#[test]
fn a_card_pulled_at_every_apdu_of_store_and_delete_holds_old_or_new() {
    use cardvault::transport::fault::{FaultyReader, PullMode, PullSchedule};
    use std::sync::Arc;

    let old = vec![0xA1; 700];
    let new = vec![0xB2; 1500];
    // One run of the whole exchange on `dir`'s card under `sched`.
    let run = |dir: &Path,
               sdi_of: &dyn Fn(&Vault, &str) -> StoringDataInfo,
               data: Option<&[u8]>,
               sched: &Arc<PullSchedule>| {
        let mut r = FaultyReader::new(SimReader::open(dir, "card", "services", None).unwrap(), sched.clone());
        let mut c = CardClient::open(&mut r, SessionOptions::default())?;
        let mut v = vault(dir);
        let number = c.card_number()?;
        let req = storing::request(&mut c, PIN.as_bytes(), &sdi_of(&v, &number))?;
        let sa = authorize(&req, Party::Issuer);
        storing::apply(&mut c, PIN.as_bytes(), &sa, data, &mut v).map(|_| ())
    };
    let store_new = |_: &Vault, _: &str| record(&new);
    let delete = |v: &Vault, n: &str| storing::delete_info(v, n, MEDICAL).unwrap();
    for (op, sdi_of, data, before, after) in [
        (
            "store",
            &store_new as &dyn Fn(&Vault, &str) -> StoringDataInfo,
            Some(&new[..]),
            &old,
            &new,
        ),
        ("delete", &delete, None, &old, &vec![]),
    ] {
        // The template: a card holding `old`, recorded.
        let template = temp_dir(&format!("storing-cut-{op}"));
        let req = request(&template, "card", &record(&old));
        apply(&template, "card", &authorize(&req, Party::Provider), Some(&old)).unwrap();
        let counting = PullSchedule::counting();
        {
            let dir = temp_dir("storing-cut-count");
            copy_dir(&template, &dir);
            run(&dir, sdi_of, data, &counting).unwrap();
        }
        let n = counting.delivered();
        assert!(n >= 8, "{op}: {n} APDUs");
        for k in 1..=n {
            for mode in [PullMode::AnswerLost, PullMode::NotDelivered] {
                let dir = temp_dir("storing-cut");
                copy_dir(&template, &dir);
                let sched = PullSchedule::new(k, mode);
                let r = run(&dir, sdi_of, data, &sched);
                assert!(r.is_err(), "{op} cut at {k} ({mode:?}) completed");
                let held = app_bytes(&dir, "card", MEDICAL);
                let is = |d: &[u8]| held[..d.len()] == *d && held[d.len()..].iter().all(|b| *b == 0);
                assert!(is(before) || is(after), "{op} cut at {k} ({mode:?}): a mix");
                // The retry, with a fresh request, completes.
                run(&dir, sdi_of, data, &PullSchedule::counting())
                    .unwrap_or_else(|e| panic!("{op} cut at {k} ({mode:?}): retry: {e}"));
                assert!(
                    is_exactly(&app_bytes(&dir, "card", MEDICAL), after),
                    "{op} cut at {k} ({mode:?})"
                );
                records_match_card(&dir, "card");
            }
        }
    }
}

fn is_exactly(held: &[u8], d: &[u8]) -> bool {
    held[..d.len()] == *d && held[d.len()..].iter().all(|b| *b == 0)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".lock") {
            continue;
        }
        if p.is_dir() {
            copy_dir(&p, &to.join(&name));
        } else {
            std::fs::copy(&p, to.join(&name)).unwrap();
        }
    }
}

/// A restore never writes an `authorized` application: a record deleted
/// under authorization stays deleted when an older backup is restored, while
/// the holder's own application comes back; the vault still matches the card.
#[test]
fn a_restore_leaves_authorized_applications_as_they_are() {
    use cardvault::workflow::backup as wb;
    let home = temp_dir("storing-restore");
    let record_data = b"record before the backup".to_vec();
    let req = request(&home, "card", &record(&record_data));
    apply(&home, "card", &authorize(&req, Party::Issuer), Some(&record_data)).unwrap();
    let number = req.card_number.clone();
    let mut v = vault(&home);
    with_card(&home, "card", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        c.write_memory(4, &[0x44; 512]).unwrap();
        wb::backup(c, &mut v, true, &|_, _| {}).unwrap();
    });
    let del = storing::delete_info(&v, &number, MEDICAL).unwrap();
    let req = request(&home, "card", &del);
    apply(&home, "card", &authorize(&req, Party::Provider), None).unwrap();
    with_card(&home, "card", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        c.write_memory(4, &[0x55; 512]).unwrap();
        let last = v.latest_backup(&number).unwrap().unwrap();
        let plan = wb::RestorePlan {
            chain: v.chain_to(&last).unwrap(),
            authorization: None,
            override_rollback: false,
        };
        let rep = wb::restore(c, &mut v, &plan, &|_, _| {}).unwrap();
        // 256 pages less the purse (4), the ID (32), the medical record (128), loyalty (60).
        assert_eq!(rep.pages_written, 256 - 4 - 32 - 128 - 60);
    });
    assert_eq!(&app_bytes(&home, "card", 2)[..512], &[0x44; 512][..]);
    assert!(app_bytes(&home, "card", MEDICAL).iter().all(|b| *b == 0));
    records_match_card(&home, "card");
}

/// Short APDUs only: the request's answer comes by GET RESPONSE and a 20 KiB
/// record goes by command chaining under SCP11, and lands whole.
#[test]
fn short_apdus_only_store_a_large_record_by_chaining() {
    let home = temp_dir("storing-short");
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let mut v = vault(&home);
    let mut r = SimReader::open(&home, "card", "services", Some(false)).unwrap();
    let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
    let req = storing::request(&mut c, PIN.as_bytes(), &record(&data)).unwrap();
    let sa = authorize(&req, Party::Provider);
    let before = c.stats().apdus;
    storing::apply(&mut c, PIN.as_bytes(), &sa, Some(&data), &mut v).unwrap();
    assert!(
        c.stats().apdus - before > 80,
        "chained: {} APDUs",
        c.stats().apdus - before
    );
    drop(c);
    drop(r);
    expect_stored(&home, "card", MEDICAL, &data);
    records_match_card(&home, "card");
}
