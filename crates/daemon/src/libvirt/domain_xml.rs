//! Where a libvirt domain's agent is reached, read from its XML: the
//! guestcomm element of `<metadata>` if there is one, else the CID of its
//! `<devices><vsock>`:
//!
//! ```xml
//! <metadata>
//!   <guestcomm:agent xmlns:guestcomm="https://guestcomm.dev/xmlns/libvirt/1"
//!                    endpoint="hvsock-uds:///run/vm1/vm.vsock?port=18243"/>
//! </metadata>
//! <devices>
//!   <vsock model='virtio'><cid auto='yes' address='3'/></vsock>
//! </devices>
//! ```
//!
//! The element is matched by its namespace, whatever its prefix. The XML is
//! bounded in size and depth; anything else in it is skipped.

use guestcomm_transport::{Address, AddressError};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};

use crate::limits::{MAX_DOMAIN_XML_BYTES, MAX_DOMAIN_XML_DEPTH};

/// The namespace of guestcomm's element in a domain's `<metadata>`.
pub(crate) const METADATA_NAMESPACE: &str = "https://guestcomm.dev/xmlns/libvirt/1";

/// Where a domain's agent is reached.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Endpoint {
    /// Declared in its metadata, or its vsock device's CID.
    At(Address),
    /// A vsock device whose CID libvirt assigns when the domain starts.
    CidNotAssigned,
    /// Neither: not a guestcomm domain.
    None,
}

/// Why a domain's XML gives no endpoint.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DomainXmlError {
    /// Larger than [`MAX_DOMAIN_XML_BYTES`].
    #[error("its XML is {0} bytes, over the {MAX_DOMAIN_XML_BYTES}-byte limit")]
    TooLarge(usize),
    /// Nested deeper than [`MAX_DOMAIN_XML_DEPTH`].
    #[error("its XML nests deeper than {MAX_DOMAIN_XML_DEPTH} elements")]
    TooDeep,
    /// Not well-formed.
    #[error("its XML is malformed at byte {0}")]
    Malformed(u64, #[source] quick_xml::Error),
    /// The metadata's endpoint is not an address.
    #[error("the endpoint {0:?} of its guestcomm metadata is invalid")]
    Endpoint(String, #[source] AddressError),
    /// The metadata element has no endpoint.
    #[error("its guestcomm metadata element <agent> has no endpoint attribute")]
    NoEndpoint,
    /// The vsock device's CID is not a number.
    #[error("its vsock device's CID {0:?} is not a number")]
    Cid(String),
}

/// Where the agent of the domain described by `xml` is reached.
pub(crate) fn endpoint(xml: &str) -> Result<Endpoint, DomainXmlError> {
    if xml.len() > MAX_DOMAIN_XML_BYTES {
        return Err(DomainXmlError::TooLarge(xml.len()));
    }
    let mut reader = quick_xml::NsReader::from_str(xml);
    reader.config_mut().check_end_names = true;
    // The open elements' local names, outermost first.
    let mut path: Vec<String> = Vec::new();
    let mut declared = None;
    let mut vsock = Endpoint::None;
    loop {
        let (ours, event) = match reader.read_resolved_event() {
            Ok((namespace, event)) => (
                matches!(namespace, ResolveResult::Bound(Namespace(ns)) if ns == METADATA_NAMESPACE),
                event,
            ),
            Err(e) => return Err(DomainXmlError::Malformed(reader.error_position(), e)),
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let local = e.local_name().as_ref().to_string();
                let at = |names: &[&str]| {
                    path.len() == names.len() && path.iter().zip(names).all(|(a, b)| a == b)
                };
                if ours && local == "agent" && at(&["domain", "metadata"]) {
                    let text = attribute(e, "endpoint")?.ok_or(DomainXmlError::NoEndpoint)?;
                    let address = text
                        .parse()
                        .map_err(|err| DomainXmlError::Endpoint(text.clone(), err))?;
                    declared = Some(address);
                } else if local == "cid" && at(&["domain", "devices", "vsock"]) {
                    vsock = match attribute(e, "address")? {
                        Some(cid) => {
                            let cid: u32 = cid.parse().map_err(|_| DomainXmlError::Cid(cid))?;
                            Endpoint::At(Address::Vsock {
                                cid,
                                port: guestcomm_protocol::service::AGENT_VSOCK_PORT,
                            })
                        }
                        None => Endpoint::CidNotAssigned,
                    };
                }
                if matches!(event, Event::Start(_)) {
                    if path.len() >= MAX_DOMAIN_XML_DEPTH {
                        return Err(DomainXmlError::TooDeep);
                    }
                    path.push(local);
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(declared.map(Endpoint::At).unwrap_or(vsock))
}

/// The unescaped value of attribute `name` of `element`, if present.
fn attribute(element: &BytesStart<'_>, name: &str) -> Result<Option<String>, DomainXmlError> {
    for attr in element.attributes() {
        let attr = attr.map_err(|e| DomainXmlError::Malformed(0, e.into()))?;
        if attr.key.local_name().as_ref() == name {
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| DomainXmlError::Malformed(0, e))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(inner: &str) -> String {
        format!("<domain type='qemu'><name>vm1</name>{inner}</domain>")
    }

    #[test]
    fn the_metadata_element_is_found_by_namespace_whatever_its_prefix() {
        for prefix in ["guestcomm", "gc"] {
            let xml = domain(&format!(
                "<metadata><other:x xmlns:other='urn:x'/><{prefix}:agent xmlns:{prefix}='{METADATA_NAMESPACE}' endpoint='hvsock-uds:///run/a.vsock?port=52'/></metadata>\
                 <devices><vsock model='virtio'><cid auto='no' address='3'/></vsock></devices>"
            ));
            assert_eq!(
                endpoint(&xml).unwrap(),
                Endpoint::At("hvsock-uds:///run/a.vsock?port=52".parse().unwrap()),
                "the metadata wins over the vsock device"
            );
        }
    }

    #[test]
    fn an_agent_element_of_another_namespace_or_place_is_not_ours() {
        let xml = domain(
            "<metadata><agent xmlns='urn:other' endpoint='unix:///x'/></metadata>\
             <devices><agent xmlns='https://guestcomm.dev/xmlns/libvirt/1' endpoint='unix:///y'/></devices>",
        );
        assert_eq!(endpoint(&xml).unwrap(), Endpoint::None);
    }

    #[test]
    fn a_vsock_device_gives_its_cid_or_says_it_is_not_assigned_yet() {
        let fixed = domain(
            "<devices><vsock model='virtio'><cid auto='yes' address='42'/></vsock></devices>",
        );
        assert_eq!(
            endpoint(&fixed).unwrap(),
            Endpoint::At("vsock://42".parse().unwrap())
        );
        let auto = domain("<devices><vsock model='virtio'><cid auto='yes'/></vsock></devices>");
        assert_eq!(endpoint(&auto).unwrap(), Endpoint::CidNotAssigned);
        assert_eq!(endpoint(&domain("<devices/>")).unwrap(), Endpoint::None);
    }

    #[test]
    fn bad_documents_and_values_are_refused_with_what_is_wrong() {
        let bad_endpoint = domain(&format!(
            "<metadata><g:agent xmlns:g='{METADATA_NAMESPACE}' endpoint='ftp://x'/></metadata>"
        ));
        let err = endpoint(&bad_endpoint).unwrap_err().to_string();
        assert!(err.contains("\"ftp://x\""), "{err}");
        let no_endpoint = domain(&format!(
            "<metadata><g:agent xmlns:g='{METADATA_NAMESPACE}'/></metadata>"
        ));
        assert!(matches!(
            endpoint(&no_endpoint),
            Err(DomainXmlError::NoEndpoint)
        ));
        let cid = domain("<devices><vsock><cid address='three'/></vsock></devices>");
        assert!(matches!(endpoint(&cid), Err(DomainXmlError::Cid(c)) if c == "three"));
        assert!(matches!(
            endpoint("<domain><name></domain>"),
            Err(DomainXmlError::Malformed(..))
        ));
        let deep = "<a>".repeat(MAX_DOMAIN_XML_DEPTH + 1);
        assert!(matches!(endpoint(&deep), Err(DomainXmlError::TooDeep)));
        let large = " ".repeat(MAX_DOMAIN_XML_BYTES + 1);
        assert!(matches!(endpoint(&large), Err(DomainXmlError::TooLarge(_))));
    }
}
