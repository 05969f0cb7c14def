//! CIM-XML (DMTF DSP0201) as guestcomm's WBEM endpoint speaks it.
//!
//! ```text
//! request body (at most MAX_REQUEST_BYTES, checked before parsing)
//!   -> tree: elements, attributes, text; refused: a DOCTYPE (so no
//!      entity can expand: no XML bomb), an unknown entity, nesting deeper
//!      than MAX_XML_DEPTH, more than MAX_XML_ELEMENTS elements
//!   -> request: SIMPLEREQ with one IMETHODCALL or METHODCALL, its
//!      namespace, target and parameters (module request)
//! response (module response): the objects of the repository and the
//!   server's instances as CLASS, INSTANCE, INSTANCENAME, VALUE.NAMEDINSTANCE,
//!   VALUE.OBJECTWITHPATH, method results, or an ERROR with a CIM status
//! ```

pub mod client;
pub mod request;
pub mod response;

pub use crate::limits::{
    MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, MAX_RESPONSE_ELEMENTS, MAX_XML_DEPTH, MAX_XML_ELEMENTS,
};

use quick_xml::events::Event;

/// The bounds of one parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest document, in bytes.
    pub max_bytes: usize,
    /// Most elements.
    pub max_elements: usize,
}

impl Limits {
    /// What a server accepts in a request.
    pub const REQUEST: Self = Self {
        max_bytes: MAX_REQUEST_BYTES,
        max_elements: MAX_XML_ELEMENTS,
    };
    /// What a client accepts in a response.
    pub const RESPONSE: Self = Self {
        max_bytes: MAX_RESPONSE_BYTES,
        max_elements: MAX_RESPONSE_ELEMENTS,
    };
}

/// Why a CIM-XML document was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    /// The body is larger than the limit ([`MAX_REQUEST_BYTES`] for requests).
    #[error("a document of {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
    /// The body is not UTF-8.
    #[error("the request is not UTF-8 text")]
    NotUtf8,
    /// A document type declaration (which could declare entities).
    #[error("a DOCTYPE (document type declaration) is not accepted in CIM-XML requests")]
    Doctype,
    /// An entity reference other than XML's five and character references.
    #[error("unknown entity &{0}; (only &lt; &gt; &amp; &quot; &apos; and character references)")]
    UnknownEntity(String),
    /// Nesting deeper than [`MAX_XML_DEPTH`].
    #[error("elements nested deeper than {MAX_XML_DEPTH} levels")]
    TooDeep,
    /// More elements than the limit ([`MAX_XML_ELEMENTS`] for requests).
    #[error("more than {0} elements")]
    TooManyElements(usize),
    /// Not well-formed XML.
    #[error("malformed XML at byte {position}: {message}")]
    Malformed {
        /// Byte offset.
        position: u64,
        /// The parser's message.
        message: String,
    },
    /// Well-formed, but not the CIM-XML this server reads.
    #[error("invalid CIM-XML: {0}")]
    Invalid(String),
}

impl XmlError {
    /// The DSP0200 `CIMError` header of an HTTP 400 answer to it
    /// (`request-not-well-formed` or `request-not-valid`).
    pub fn cim_error_header(&self) -> &'static str {
        match self {
            Self::Malformed { .. } | Self::NotUtf8 | Self::UnknownEntity(_) => {
                "request-not-well-formed"
            }
            _ => "request-not-valid",
        }
    }
}

/// An element: name, attributes, children and its text (the text directly
/// inside it, concatenated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    /// Tag name.
    pub name: String,
    /// Attributes, in order, values unescaped.
    pub attributes: Vec<(String, String)>,
    /// Child elements.
    pub children: Vec<Element>,
    /// Text content, unescaped.
    pub text: String,
}

impl Element {
    /// The value of attribute `name` (case-sensitive, as XML).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of attribute `name`, or an error naming the element.
    pub fn required(&self, name: &str) -> Result<&str, XmlError> {
        self.attr(name)
            .ok_or_else(|| XmlError::Invalid(format!("{} has no {name} attribute", self.name)))
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The only child, or an error naming what was expected.
    pub fn only_child(&self, expected: &str) -> Result<&Element, XmlError> {
        match self.children.as_slice() {
            [one] => Ok(one),
            _ => Err(XmlError::Invalid(format!(
                "{} must hold exactly one {expected}",
                self.name
            ))),
        }
    }
}

/// Parses a request `body` into its root element, within [`Limits::REQUEST`].
pub fn parse_document(body: &[u8]) -> Result<Element, XmlError> {
    parse_with(body, Limits::REQUEST)
}

/// Parses `body` into its root element, within `limits` (and [`MAX_XML_DEPTH`]).
pub fn parse_with(body: &[u8], limits: Limits) -> Result<Element, XmlError> {
    if body.len() > limits.max_bytes {
        return Err(XmlError::TooLarge(body.len(), limits.max_bytes));
    }
    let text = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
    let mut reader = quick_xml::Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    let malformed =
        |reader: &quick_xml::Reader<&[u8]>, e: &dyn std::fmt::Display| XmlError::Malformed {
            position: reader.error_position(),
            message: e.to_string(),
        };
    // The open elements, innermost last; the root once closed.
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| malformed(&reader, &e))?;
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(XmlError::Invalid("content after the root element".into()));
            }
            Event::Start(ref start) | Event::Empty(ref start) => {
                count += 1;
                if count > limits.max_elements {
                    return Err(XmlError::TooManyElements(limits.max_elements));
                }
                if stack.len() >= MAX_XML_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                let mut element = Element {
                    name: start.name().as_ref().to_string(),
                    ..Element::default()
                };
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| malformed(&reader, &e))?;
                    let value = attr
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| match e {
                            quick_xml::Error::Escape(
                                quick_xml::escape::EscapeError::UnrecognizedEntity(_, name),
                            ) => XmlError::UnknownEntity(name),
                            other => malformed(&reader, &other),
                        })?;
                    element
                        .attributes
                        .push((attr.key.as_ref().to_string(), value.into_owned()));
                }
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &mut root, element);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => match stack.pop() {
                Some(element) => close(&mut stack, &mut root, element),
                None => return Err(malformed(&reader, &"an end tag without a start")),
            },
            Event::Text(t) => append_text(&mut stack, &t.xml10_content())?,
            Event::CData(c) => append_text(&mut stack, &c.xml10_content())?,
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref().map_err(|e| malformed(&reader, &e))? {
                    Some(ch) => ch,
                    None => match &*r {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(XmlError::UnknownEntity(other.to_string())),
                    },
                };
                append_text(&mut stack, ch.encode_utf8(&mut [0; 4]))?;
            }
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed {
            position: reader.buffer_position(),
            message: format!("<{}> is not closed", stack[stack.len() - 1].name),
        });
    }
    root.ok_or_else(|| XmlError::Invalid("no root element".into()))
}

/// Attaches a finished element to its parent, or makes it the root.
fn close(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

/// Adds text to the innermost open element; text outside the root must be
/// blank.
fn append_text(stack: &mut [Element], text: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(parent) => parent.text.push_str(text),
        None if text.trim().is_empty() => {}
        None => return Err(XmlError::Invalid("text outside the root element".into())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_becomes_a_tree_with_unescaped_text_and_attributes() {
        let doc = br#"<?xml version="1.0"?><!-- c --><A x="1 &amp; 2"><B>a &lt;&#65;&gt; <![CDATA[<c>]]></B><C/></A>"#;
        let root = parse_document(doc).unwrap();
        assert_eq!(root.name, "A");
        assert_eq!(root.attr("x"), Some("1 & 2"));
        assert_eq!(root.children[0].text, "a <A> <c>");
        assert_eq!(root.children[1].name, "C");
    }

    #[test]
    fn hostile_documents_are_refused_with_their_reason() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><CIM>&lol2;</CIM>"#;
        assert_eq!(parse_document(bomb), Err(XmlError::Doctype));
        assert_eq!(
            parse_document(b"<CIM>&lol;</CIM>"),
            Err(XmlError::UnknownEntity("lol".into()))
        );
        assert_eq!(
            parse_document(br#"<CIM a="&x;"/>"#),
            Err(XmlError::UnknownEntity("x".into()))
        );
        let deep = "<a>".repeat(MAX_XML_DEPTH + 1) + &"</a>".repeat(MAX_XML_DEPTH + 1);
        assert_eq!(parse_document(deep.as_bytes()), Err(XmlError::TooDeep));
        let ok = "<a>".repeat(MAX_XML_DEPTH) + &"</a>".repeat(MAX_XML_DEPTH);
        assert!(parse_document(ok.as_bytes()).is_ok());
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert_eq!(
            parse_document(&big),
            Err(XmlError::TooLarge(MAX_REQUEST_BYTES + 1, MAX_REQUEST_BYTES))
        );
        let many = format!("<a>{}</a>", "<b/>".repeat(MAX_XML_ELEMENTS));
        assert_eq!(
            parse_document(many.as_bytes()),
            Err(XmlError::TooManyElements(MAX_XML_ELEMENTS))
        );
        for bad in [
            &b"<a><b></a>"[..],
            b"<a>",
            b"",
            b"<a/><b/>",
            b"text",
            b"\xff\xfe",
            b"<a x='1' x='2'/>",
        ] {
            assert!(
                parse_document(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_document(&body);
        }

        #[test]
        fn arbitrary_markup_never_panics(body in "[<>/a-c=\"'&;#x!\\[\\]?-]{0,200}") {
            let _ = parse_document(body.as_bytes());
        }
    }
}
