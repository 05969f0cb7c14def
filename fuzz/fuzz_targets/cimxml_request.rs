//! Fuzzes the WBEM endpoint's input: arbitrary bytes as a CIM-XML request
//! (`parse_request`), every string value of it as an embedded instance
//! (`parse_embedded_instance`), the bytes as a client's answer
//! (`parse_response`) and, when they are UTF-8, as a WQL query.
//!
//! Checked: no panic; whatever decodes as a request re-encodes into an
//! answer that decodes again (the server's encoder escapes everything).

#![no_main]

use guestcomm_cim::xml::client::parse_response;
use guestcomm_cim::xml::request::{parse_embedded_instance, parse_request, ParamValue};
use guestcomm_cim::xml::response;
use guestcomm_cim::{wql, CimError, CimStatus};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse_request(data) {
        for p in &req.call.params {
            match &p.value {
                ParamValue::Value(v) => {
                    let _ = parse_embedded_instance(v);
                }
                ParamValue::Array(items) => {
                    for v in items.iter().flatten() {
                        let _ = parse_embedded_instance(v);
                    }
                }
                _ => {}
            }
        }
        // Names and descriptions from the request go back escaped.
        let err = CimError::new(CimStatus::Failed, format!("{:?}", req.call.params));
        let answer = response::imethod_response(&req.id, &req.call.name, Err(&err));
        assert!(
            matches!(parse_response(answer.as_bytes()), Ok(Err(_))),
            "an answer that does not decode: {answer}"
        );
    }
    let _ = parse_response(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(q) = wql::parse(text) {
            let _ = q.matches(&|_| None);
        }
    }
});
