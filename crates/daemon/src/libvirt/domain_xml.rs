//! What guestcommd reads of a libvirt domain's XML. Where its agent is
//! reached: the guestcomm element of `<metadata>` if there is one, else the
//! CID of its `<devices><vsock>`:
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
//! The element is matched by its namespace, whatever its prefix. Also read:
//! the key's firmware configuration entry, `<sysinfo type='fwcfg'><entry
//! name='opt/io.systemd.credentials/guestcomm.key' file=.../>` (or with the
//! key inline), and where such an entry would be added to the text. The
//! XML is bounded in size and depth; anything else in it is skipped.

use guestcomm_protocol::auth::FW_CFG_CREDENTIAL;
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
#[cfg(test)]
fn endpoint(xml: &str) -> Result<Endpoint, DomainXmlError> {
    read(xml).map(|d| d.endpoint)
}

/// What guestcomm reads of a domain's XML.
#[derive(Debug)]
pub(crate) struct DomainXml {
    /// Where its agent is reached.
    pub(crate) endpoint: Endpoint,
    /// Its firmware configuration entry carrying the key, if any.
    pub(crate) credential: Option<Credential>,
    /// Where an entry goes: the offset of the fwcfg `<sysinfo>`'s end tag
    /// (`true`), else that of `</domain>` (`false`: a new `<sysinfo>`).
    insert_at: Option<(usize, bool)>,
}

/// The domain's `<sysinfo type='fwcfg'><entry name='opt/io.systemd.credentials/guestcomm.key'>`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Credential {
    /// `file='PATH'`: QEMU reads the file.
    File(String),
    /// The value inline (QEMU's command line carries it).
    Value(String),
    /// Neither could be read (an entity the reader does not resolve).
    Unreadable,
}

/// What [`read`] is inside of, in the fwcfg `<sysinfo>`.
#[derive(PartialEq)]
enum InFwCfg {
    No,
    Sysinfo,
    /// The credential entry; its text so far.
    Entry,
}

/// Reads the endpoint and the credential entry of the domain described by
/// `xml`, bounded as the module says.
pub(crate) fn read(xml: &str) -> Result<DomainXml, DomainXmlError> {
    if xml.len() > MAX_DOMAIN_XML_BYTES {
        return Err(DomainXmlError::TooLarge(xml.len()));
    }
    let mut reader = quick_xml::NsReader::from_str(xml);
    reader.config_mut().check_end_names = true;
    // The open elements' local names, outermost first.
    let mut path: Vec<String> = Vec::new();
    let mut declared = None;
    let mut vsock = Endpoint::None;
    let mut credential = None;
    let mut inside = InFwCfg::No;
    let mut value = String::new();
    let mut insert_at = None;
    loop {
        let before = reader.buffer_position() as usize;
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
                } else if local == "sysinfo"
                    && at(&["domain"])
                    && matches!(event, Event::Start(_))
                    && attribute(e, "type")?.as_deref() == Some("fwcfg")
                {
                    inside = InFwCfg::Sysinfo;
                } else if local == "entry"
                    && inside == InFwCfg::Sysinfo
                    && at(&["domain", "sysinfo"])
                    && attribute(e, "name")?.as_deref() == Some(FW_CFG_CREDENTIAL)
                {
                    credential = Some(match attribute(e, "file")? {
                        Some(file) => Credential::File(file),
                        None => Credential::Value(String::new()),
                    });
                    if matches!(event, Event::Start(_)) {
                        inside = InFwCfg::Entry;
                    }
                }
                if matches!(event, Event::Start(_)) {
                    if path.len() >= MAX_DOMAIN_XML_DEPTH {
                        return Err(DomainXmlError::TooDeep);
                    }
                    path.push(local);
                }
            }
            Event::Text(ref text) if inside == InFwCfg::Entry => {
                value.push_str(&text.xml10_content());
            }
            Event::GeneralRef(ref entity) if inside == InFwCfg::Entry => {
                let name = entity.xml10_content();
                if let Some(resolved) = quick_xml::escape::resolve_predefined_entity(&name) {
                    value.push_str(resolved);
                } else if let Ok(Some(c)) = entity.resolve_char_ref() {
                    value.push(c);
                } else {
                    credential = Some(Credential::Unreadable);
                }
            }
            Event::End(_) => {
                match (path.len(), &inside) {
                    (3, InFwCfg::Entry) => {
                        if let Some(Credential::Value(inline)) = &mut credential {
                            *inline = std::mem::take(&mut value);
                        }
                        inside = InFwCfg::Sysinfo;
                    }
                    (2, InFwCfg::Sysinfo) => {
                        insert_at.get_or_insert((before, true));
                        inside = InFwCfg::No;
                    }
                    (1, _) => {
                        insert_at.get_or_insert((before, false));
                    }
                    _ => {}
                }
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(DomainXml {
        endpoint: declared.map(Endpoint::At).unwrap_or(vsock),
        credential,
        insert_at,
    })
}

impl DomainXml {
    /// `xml` (the document this was read from) with the credential entry
    /// `entry` (`<entry name=... file=.../>`) added: into its fwcfg
    /// `<sysinfo>`, else in a new one; the rest of the text as it was.
    pub(crate) fn with_credential_entry(&self, xml: &str, entry: &str) -> Option<String> {
        let (at, into_sysinfo) = self.insert_at?;
        let added = if into_sysinfo {
            format!("  {entry}\n  ")
        } else {
            format!("  <sysinfo type='fwcfg'>\n    {entry}\n  </sysinfo>\n")
        };
        let mut out = String::with_capacity(xml.len() + added.len());
        out.push_str(xml.get(..at)?);
        out.push_str(&added);
        out.push_str(xml.get(at..)?);
        Some(out)
    }
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

    const ENTRY: &str =
        "<entry name='opt/io.systemd.credentials/guestcomm.key' file='/k/vm1.key'/>";

    #[test]
    fn the_credential_entry_is_added_into_a_fwcfg_sysinfo_or_a_new_one_and_the_rest_kept() {
        let bare = domain("<devices><disk/></devices>");
        let read_bare = read(&bare).unwrap();
        assert_eq!(read_bare.credential, None);
        let added = read_bare.with_credential_entry(&bare, ENTRY).unwrap();
        assert!(
            added.starts_with(&bare[..bare.len() - "</domain>".len()]),
            "{added}"
        );
        assert_eq!(
            read(&added).unwrap().credential,
            Some(Credential::File("/k/vm1.key".into()))
        );

        let other = domain(
            "<sysinfo type='smbios'><oemStrings><entry>x</entry></oemStrings></sysinfo>\
             <sysinfo type='fwcfg'><entry name='opt/com.example/x'>y</entry></sysinfo>",
        );
        let read_other = read(&other).unwrap();
        assert_eq!(read_other.credential, None, "another entry is not the key");
        let added = read_other.with_credential_entry(&other, ENTRY).unwrap();
        assert_eq!(
            added.matches("<sysinfo type='fwcfg'>").count(),
            1,
            "{added}"
        );
        assert!(added.contains("<entry name='opt/com.example/x'>y</entry>"));
        assert!(read(&added).unwrap().credential.is_some());
    }

    #[test]
    fn an_inline_credential_entry_is_read_with_its_entities() {
        let xml = domain(
            "<sysinfo type='fwcfg'><entry name='opt/io.systemd.credentials/guestcomm.key'>{&quot;k&quot;:&#49;}</entry></sysinfo>",
        );
        assert_eq!(
            read(&xml).unwrap().credential,
            Some(Credential::Value("{\"k\":1}".into()))
        );
        let odd = domain(
            "<sysinfo type='fwcfg'><entry name='opt/io.systemd.credentials/guestcomm.key'>&k;</entry></sysinfo>",
        );
        // Never a wrong key: unreadable.
        assert_eq!(read(&odd).unwrap().credential, Some(Credential::Unreadable));
    }
}
