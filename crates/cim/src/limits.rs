//! The bounds of the CIM-XML codec and the WQL parser, each with the
//! reason for its value. Everything a client sends is checked against
//! these before it is held whole.

/// Largest request body accepted, in bytes: a CIM-XML request of this
/// server is a few KiB (a CopyFilesToGuest with many files a few tens), so
/// 1 MiB leaves room and bounds what one request can make the server hold.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Deepest element nesting accepted: the deepest request DSP0201 allows
/// for these operations (a reference key inside a reference parameter)
/// stays under 20 levels.
pub const MAX_XML_DEPTH: usize = 32;

/// Most elements in one document: bounds the tree's memory (a 1 MiB body
/// of empty elements would otherwise make some 250,000).
pub const MAX_XML_ELEMENTS: usize = 50_000;

/// Largest response a client ([`crate::xml::client`]) reads, in bytes: an enumeration
/// over thousands of VMs runs to tens of MiB.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Most elements in a response a client reads (bounds its memory as
/// [`MAX_XML_ELEMENTS`] does the server's).
pub const MAX_RESPONSE_ELEMENTS: usize = 8_000_000;

/// Longest query accepted, in bytes: the subset has no joins or
/// subqueries, so a real query is a line or two.
pub const MAX_QUERY_BYTES: usize = 4096;

/// Deepest nesting of parentheses and NOTs: bounds the parser's recursion.
pub const MAX_QUERY_DEPTH: usize = 32;
