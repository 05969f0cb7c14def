//! The WQL subset of ExecQuery: parsing, checking against a class, and
//! evaluating on an instance.
//!
//! ```text
//! query      = SELECT ( "*" | property { "," property } ) FROM class [ WHERE condition ]
//! condition  = term { OR term }
//! term       = factor { AND factor }
//! factor     = NOT factor | "(" condition ")" | comparison
//! comparison = property op literal | literal op property | property IS [NOT] NULL
//! op         = "=" | "<>" | "!=" | "<" | "<=" | ">" | ">="
//! literal    = 'string' | "string" | number | TRUE | FALSE | NULL
//! ```
//!
//! Keywords and property names are case-insensitive; so are string
//! comparisons, as in WMI. A comparison with a null property is false,
//! except `= NULL` / `IS NULL` (and their negations).

use std::cmp::Ordering;

pub use crate::limits::{MAX_QUERY_BYTES, MAX_QUERY_DEPTH};
use crate::value::CimValue;
use crate::CimType;

/// Why a query was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WqlError {
    /// Not in the grammar.
    #[error("at character {position}: {message}")]
    Syntax {
        /// Byte offset in the query.
        position: usize,
        /// What was expected.
        message: String,
    },
    /// Longer than [`MAX_QUERY_BYTES`].
    #[error("a query of {0} bytes exceeds the limit of {MAX_QUERY_BYTES}")]
    TooLong(usize),
    /// Nested deeper than [`MAX_QUERY_DEPTH`].
    #[error("conditions nested deeper than {MAX_QUERY_DEPTH} levels")]
    TooDeep,
    /// A property the class does not have.
    #[error("class {class} has no property {property}")]
    UnknownProperty {
        /// The class queried.
        class: String,
        /// The property named.
        property: String,
    },
    /// A literal that cannot compare with the property's type.
    #[error("property {property} ({cim_type}) cannot be compared with {literal}")]
    TypeMismatch {
        /// The property.
        property: String,
        /// Its CIM type.
        cim_type: String,
        /// The literal, as written.
        literal: String,
    },
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `<>` or `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    /// The operator with its sides swapped (`5 < x` is `x > 5`).
    fn flipped(self) -> Self {
        match self {
            Self::Lt => Self::Gt,
            Self::Le => Self::Ge,
            Self::Gt => Self::Lt,
            Self::Ge => Self::Le,
            same => same,
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            Self::Eq => ord == Ordering::Equal,
            Self::Ne => ord != Ordering::Equal,
            Self::Lt => ord == Ordering::Less,
            Self::Le => ord != Ordering::Greater,
            Self::Gt => ord == Ordering::Greater,
            Self::Ge => ord != Ordering::Less,
        }
    }
}

/// A literal of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// Quoted text.
    String(String),
    /// A whole number.
    Integer(i128),
    /// A number with a fraction.
    Real(f64),
    /// `TRUE` or `FALSE`.
    Boolean(bool),
    /// `NULL`.
    Null,
}

/// A WHERE condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// Either holds.
    Or(Box<Condition>, Box<Condition>),
    /// Both hold.
    And(Box<Condition>, Box<Condition>),
    /// It does not hold.
    Not(Box<Condition>),
    /// `property op literal`.
    Compare {
        /// The property.
        property: String,
        /// The operator.
        op: Op,
        /// The literal.
        literal: Literal,
    },
}

/// A parsed query.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// The properties selected; `None` for `*`.
    pub properties: Option<Vec<String>>,
    /// The class after FROM.
    pub class: String,
    /// The WHERE condition.
    pub condition: Option<Condition>,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Number(String),
    Sym(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, WqlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let syntax = |position, message: &str| WqlError::Syntax {
        position,
        message: message.to_string(),
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let token = if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            Token::Word(text[start..i].to_string())
        } else if c.is_ascii_digit()
            || (c == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            i += 1;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            Token::Number(text[start..i].to_string())
        } else if c == b'\'' || c == b'"' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(ch) = text[i..].chars().next() else {
                    return Err(syntax(start, "a string that does not end"));
                };
                i += ch.len_utf8();
                if ch == '\\' {
                    match text[i..].chars().next() {
                        Some(next) => {
                            s.push(next);
                            i += next.len_utf8();
                        }
                        None => return Err(syntax(start, "a string that does not end")),
                    }
                } else if ch == char::from(c) {
                    // A doubled quote stands for itself.
                    if bytes.get(i) == Some(&c) {
                        s.push(ch);
                        i += 1;
                    } else {
                        break;
                    }
                } else {
                    s.push(ch);
                }
            }
            Token::Str(s)
        } else {
            let two = text.get(i..i + 2).unwrap_or("");
            let sym = match two {
                "<>" | "!=" => Some(if two == "!=" { "!=" } else { "<>" }),
                "<=" => Some("<="),
                ">=" => Some(">="),
                _ => None,
            };
            match sym {
                Some(s) => {
                    i += 2;
                    Token::Sym(s)
                }
                None => {
                    i += 1;
                    Token::Sym(match c {
                        b'=' => "=",
                        b'<' => "<",
                        b'>' => ">",
                        b'(' => "(",
                        b')' => ")",
                        b',' => ",",
                        b'*' => "*",
                        _ => {
                            let ch = text[start..].chars().next().unwrap_or('?');
                            return Err(syntax(start, &format!("unexpected character {ch:?}")));
                        }
                    })
                }
            }
        };
        out.push((token, start));
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    end: usize,
}

impl Parser {
    fn position(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |t| t.1)
    }

    fn error(&self, message: &str) -> WqlError {
        WqlError::Syntax {
            position: self.position(),
            message: message.to_string(),
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|t| &t.0)
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), WqlError> {
        if self.keyword(word) {
            Ok(())
        } else {
            Err(self.error(&format!("expected {word}")))
        }
    }

    fn sym(&mut self, sym: &str) -> bool {
        if self.peek()
            == Some(&Token::Sym(match sym {
                "(" => "(",
                ")" => ")",
                "," => ",",
                "*" => "*",
                _ => return false,
            }))
        {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn identifier(&mut self, what: &str) -> Result<String, WqlError> {
        match self.peek() {
            Some(Token::Word(w)) if !is_reserved(w) => {
                let w = w.clone();
                self.at += 1;
                Ok(w)
            }
            _ => Err(self.error(&format!("expected {what}"))),
        }
    }

    fn condition(&mut self, depth: usize) -> Result<Condition, WqlError> {
        if depth > MAX_QUERY_DEPTH {
            return Err(WqlError::TooDeep);
        }
        let mut left = self.term(depth)?;
        while self.keyword("OR") {
            let right = self.term(depth)?;
            left = Condition::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn term(&mut self, depth: usize) -> Result<Condition, WqlError> {
        let mut left = self.factor(depth)?;
        while self.keyword("AND") {
            let right = self.factor(depth)?;
            left = Condition::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn factor(&mut self, depth: usize) -> Result<Condition, WqlError> {
        if depth > MAX_QUERY_DEPTH {
            return Err(WqlError::TooDeep);
        }
        if self.keyword("NOT") {
            return Ok(Condition::Not(Box::new(self.factor(depth + 1)?)));
        }
        if self.sym("(") {
            let inner = self.condition(depth + 1)?;
            if !self.sym(")") {
                return Err(self.error("expected )"));
            }
            return Ok(inner);
        }
        if let Some(literal) = self.literal()? {
            let op = self.op()?.flipped();
            let property = self.identifier("a property name")?;
            return Ok(Condition::Compare {
                property,
                op,
                literal,
            });
        }
        let property = self.identifier("a property name, NOT or (")?;
        if self.keyword("IS") {
            let negated = self.keyword("NOT");
            self.expect_keyword("NULL")?;
            let op = if negated { Op::Ne } else { Op::Eq };
            return Ok(Condition::Compare {
                property,
                op,
                literal: Literal::Null,
            });
        }
        let op = self.op()?;
        let literal = self.literal()?.ok_or_else(|| {
            self.error("expected a literal: 'text', a number, TRUE, FALSE or NULL")
        })?;
        Ok(Condition::Compare {
            property,
            op,
            literal,
        })
    }

    fn op(&mut self) -> Result<Op, WqlError> {
        let op = match self.peek() {
            Some(Token::Sym("=")) => Op::Eq,
            Some(Token::Sym("<>" | "!=")) => Op::Ne,
            Some(Token::Sym("<")) => Op::Lt,
            Some(Token::Sym("<=")) => Op::Le,
            Some(Token::Sym(">")) => Op::Gt,
            Some(Token::Sym(">=")) => Op::Ge,
            _ => return Err(self.error("expected a comparison (=, <>, !=, <, <=, >, >=)")),
        };
        self.at += 1;
        Ok(op)
    }

    fn literal(&mut self) -> Result<Option<Literal>, WqlError> {
        let literal = match self.peek() {
            Some(Token::Str(s)) => Literal::String(s.clone()),
            Some(Token::Number(n)) => {
                if let Ok(v) = n.parse::<i128>() {
                    Literal::Integer(v)
                } else {
                    match n.parse::<f64>() {
                        Ok(v) if v.is_finite() => Literal::Real(v),
                        _ => return Err(self.error(&format!("{n} is not a number"))),
                    }
                }
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("TRUE") => Literal::Boolean(true),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("FALSE") => Literal::Boolean(false),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("NULL") => Literal::Null,
            _ => return Ok(None),
        };
        self.at += 1;
        Ok(Some(literal))
    }
}

fn is_reserved(word: &str) -> bool {
    [
        "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IS", "NULL", "TRUE", "FALSE",
    ]
    .iter()
    .any(|k| k.eq_ignore_ascii_case(word))
}

/// Parses a WQL query.
pub fn parse(text: &str) -> Result<Query, WqlError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(WqlError::TooLong(text.len()));
    }
    let mut p = Parser {
        tokens: tokenize(text)?,
        at: 0,
        end: text.len(),
    };
    p.expect_keyword("SELECT")?;
    let properties = if p.sym("*") {
        None
    } else {
        let mut list = vec![p.identifier("* or a property name")?];
        while p.sym(",") {
            list.push(p.identifier("a property name")?);
        }
        Some(list)
    };
    p.expect_keyword("FROM")?;
    let class = p.identifier("a class name")?;
    let condition = if p.keyword("WHERE") {
        Some(p.condition(0)?)
    } else {
        None
    };
    if p.at < p.tokens.len() {
        return Err(p.error("unexpected text after the query"));
    }
    Ok(Query {
        properties,
        class,
        condition,
    })
}

impl Query {
    /// Checks every property named against the class (`type_of` gives a
    /// property's type, `None` when the class has no such property) and
    /// each literal against its property's type.
    pub fn check(&self, type_of: &dyn Fn(&str) -> Option<CimType>) -> Result<(), WqlError> {
        let unknown = |property: &str| WqlError::UnknownProperty {
            class: self.class.clone(),
            property: property.to_string(),
        };
        for p in self.properties.iter().flatten() {
            type_of(p).ok_or_else(|| unknown(p))?;
        }
        let mut stack: Vec<&Condition> = self.condition.iter().collect();
        while let Some(c) = stack.pop() {
            match c {
                Condition::Or(a, b) | Condition::And(a, b) => {
                    stack.push(a);
                    stack.push(b);
                }
                Condition::Not(a) => stack.push(a),
                Condition::Compare {
                    property, literal, ..
                } => {
                    let t = type_of(property).ok_or_else(|| unknown(property))?;
                    let fits = matches!(
                        (&t, literal),
                        (_, Literal::Null)
                            | (CimType::String | CimType::Datetime, Literal::String(_))
                            | (CimType::Boolean, Literal::Boolean(_))
                            | (
                                CimType::Uint(_) | CimType::Sint(_) | CimType::Real(_),
                                Literal::Integer(_) | Literal::Real(_),
                            )
                    );
                    if !fits {
                        return Err(WqlError::TypeMismatch {
                            property: property.clone(),
                            cim_type: t.cim_name(),
                            literal: format!("{literal:?}"),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether an instance whose property values `get` gives meets the
    /// WHERE condition (always, without one).
    pub fn matches(&self, get: &dyn Fn(&str) -> Option<CimValue>) -> bool {
        self.condition.as_ref().is_none_or(|c| holds(c, get))
    }
}

fn holds(c: &Condition, get: &dyn Fn(&str) -> Option<CimValue>) -> bool {
    match c {
        Condition::Or(a, b) => holds(a, get) || holds(b, get),
        Condition::And(a, b) => holds(a, get) && holds(b, get),
        Condition::Not(a) => !holds(a, get),
        Condition::Compare {
            property,
            op,
            literal,
        } => compare(&get(property).unwrap_or(CimValue::Null), *op, literal),
    }
}

/// `value op literal`; false when they cannot compare.
fn compare(value: &CimValue, op: Op, literal: &Literal) -> bool {
    let is_null = matches!(value, CimValue::Null);
    if let Literal::Null = literal {
        return match op {
            Op::Eq => is_null,
            Op::Ne => !is_null,
            _ => false,
        };
    }
    let ord = match (value, literal) {
        (CimValue::String(v) | CimValue::Datetime(v), Literal::String(l)) => {
            Some(v.to_lowercase().cmp(&l.to_lowercase()))
        }
        (CimValue::Boolean(v), Literal::Boolean(l)) if matches!(op, Op::Eq | Op::Ne) => {
            Some(v.cmp(l))
        }
        (CimValue::Uint(v), Literal::Integer(l)) => Some(i128::from(*v).cmp(l)),
        (CimValue::Sint(v), Literal::Integer(l)) => Some(i128::from(*v).cmp(l)),
        (CimValue::Uint(v), Literal::Real(l)) => (*v as f64).partial_cmp(l),
        (CimValue::Sint(v), Literal::Real(l)) => (*v as f64).partial_cmp(l),
        (CimValue::Real(v), Literal::Integer(l)) => v.partial_cmp(&(*l as f64)),
        (CimValue::Real(v), Literal::Real(l)) => v.partial_cmp(l),
        _ => None,
    };
    ord.is_some_and(|o| op.holds(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str) -> Option<CimValue> {
        match name.to_ascii_lowercase().as_str() {
            "enabledstate" => Some(CimValue::Uint(2)),
            "elementname" => Some(CimValue::String("guestcomm Exec".into())),
            "started" => Some(CimValue::Boolean(true)),
            "description" => Some(CimValue::Null),
            _ => None,
        }
    }

    fn eval(q: &str) -> bool {
        parse(q)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .matches(&instance)
    }

    #[test]
    fn select_lists_classes_and_conditions_parse() {
        let q = parse(
            "select Name, EnabledState from Msvm_GuestCommunicationService where EnabledState = 2",
        )
        .unwrap();
        assert_eq!(
            q.properties,
            Some(vec!["Name".into(), "EnabledState".into()])
        );
        assert_eq!(q.class, "Msvm_GuestCommunicationService");
        assert!(q.condition.is_some());
        let star = parse("SELECT * FROM Msvm_ComputerSystem").unwrap();
        assert_eq!((star.properties, star.condition), (None, None));
    }

    #[test]
    fn conditions_evaluate_with_precedence_not_and_parentheses() {
        assert!(eval("SELECT * FROM C WHERE EnabledState = 2"));
        assert!(eval("SELECT * FROM C WHERE 3 > EnabledState"));
        assert!(eval(
            "SELECT * FROM C WHERE EnabledState <> 3 AND Started = TRUE"
        ));
        assert!(eval("SELECT * FROM C WHERE EnabledState != 3"));
        assert!(eval(
            "SELECT * FROM C WHERE EnabledState >= 2 AND EnabledState <= 2.5"
        ));
        assert!(!eval(
            "SELECT * FROM C WHERE EnabledState < 2 OR EnabledState > 2"
        ));
        assert!(eval("SELECT * FROM C WHERE ElementName = 'GUESTCOMM exec'"));
        assert!(eval(
            "SELECT * FROM C WHERE ElementName = \"it's\" OR ElementName > 'a'"
        ));
        assert!(eval(
            "SELECT * FROM C WHERE Description IS NULL AND ElementName IS NOT NULL"
        ));
        assert!(eval("SELECT * FROM C WHERE Description = NULL"));
        assert!(
            !eval("SELECT * FROM C WHERE Description = 'x'"),
            "null compares false"
        );
        assert!(eval(
            "SELECT * FROM C WHERE NOT (EnabledState = 3 OR Started = FALSE)"
        ));
        // AND binds tighter than OR.
        assert!(eval(
            "SELECT * FROM C WHERE EnabledState = 2 OR EnabledState = 3 AND Started = FALSE"
        ));
        assert!(!eval(
            "SELECT * FROM C WHERE (EnabledState = 2 OR EnabledState = 3) AND Started = FALSE"
        ));
        assert_eq!(
            parse("SELECT * FROM C WHERE a = 'it''s'")
                .unwrap()
                .condition,
            Some(Condition::Compare {
                property: "a".into(),
                op: Op::Eq,
                literal: Literal::String("it's".into())
            })
        );
    }

    #[test]
    fn bad_queries_say_where() {
        for (q, expected) in [
            ("DELETE FROM C", "at character 0: expected SELECT"),
            ("SELECT FROM C", "expected * or a property name"),
            ("SELECT * C", "expected FROM"),
            ("SELECT * FROM", "at character 13: expected a class name"),
            ("SELECT * FROM C WHERE", "expected a property name"),
            ("SELECT * FROM C WHERE a = ", "expected a literal"),
            ("SELECT * FROM C WHERE a ~ 1", "unexpected character '~'"),
            ("SELECT * FROM C WHERE (a = 1", "expected )"),
            ("SELECT * FROM C WHERE a = 'x", "a string that does not end"),
            (
                "SELECT * FROM C WHERE a = 1 b",
                "unexpected text after the query",
            ),
            ("SELECT * FROM C WHERE a IS 1", "expected NULL"),
        ] {
            let err = parse(q).unwrap_err().to_string();
            assert!(err.contains(expected), "{q}: {err}");
        }
        let deep = format!(
            "SELECT * FROM C WHERE {}a = 1{}",
            "(".repeat(40),
            ")".repeat(40)
        );
        assert_eq!(parse(&deep), Err(WqlError::TooDeep));
        let nots = format!("SELECT * FROM C WHERE {}a = 1", "NOT ".repeat(40));
        assert_eq!(parse(&nots), Err(WqlError::TooDeep));
        let long = format!(
            "SELECT * FROM C WHERE a = '{}'",
            "x".repeat(MAX_QUERY_BYTES)
        );
        assert!(matches!(parse(&long), Err(WqlError::TooLong(_))));
    }

    #[test]
    fn checking_against_a_class_finds_unknown_properties_and_wrong_literals() {
        let type_of = |p: &str| match p.to_ascii_lowercase().as_str() {
            "enabledstate" => Some(CimType::Uint(16)),
            "name" => Some(CimType::String),
            _ => None,
        };
        assert!(
            parse("SELECT Name FROM C WHERE EnabledState = 2 AND Name <> NULL")
                .unwrap()
                .check(&type_of)
                .is_ok()
        );
        let err = parse("SELECT Bogus FROM C")
            .unwrap()
            .check(&type_of)
            .unwrap_err();
        assert_eq!(err.to_string(), "class C has no property Bogus");
        let err = parse("SELECT * FROM C WHERE NOT Nope = 1")
            .unwrap()
            .check(&type_of)
            .unwrap_err();
        assert!(matches!(err, WqlError::UnknownProperty { .. }));
        let err = parse("SELECT * FROM C WHERE EnabledState = 'two'")
            .unwrap()
            .check(&type_of)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("EnabledState (uint16) cannot be compared"),
            "{err}"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_queries_never_panic(q in "(SELECT|FROM|WHERE|AND|OR|NOT|IS|NULL|[ a-z0-9'\"=<>!()*,.\\\\-]){0,40}") {
            if let Ok(query) = parse(&q) {
                let _ = query.matches(&instance);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(q in ".{0,200}") {
            let _ = parse(&q);
        }
    }
}
