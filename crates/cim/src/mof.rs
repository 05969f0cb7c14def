//! A parser for the subset of MOF (DMTF DSP0221) that `classes.mof` uses:
//! class declarations with a superclass, qualifier lists (flags, a value in
//! parentheses, an array in braces), properties (with arrays, `REF` types
//! and default values) and methods with parameters. Errors name the line.

use crate::{
    CimType, Class, Literal, Method, MofError, Parameter, Property, Qualifier, Qualifiers,
};

/// The qualifiers the MOF may use beyond Key, In, Out, Abstract,
/// Association and Description, with their DMTF type and whether they take
/// an array: a flag (`boolean`) may stand alone.
pub const QUALIFIER_TYPES: &[(&str, &str, bool)] = &[
    ("Aggregate", "boolean", false),
    ("Aggregation", "boolean", false),
    ("EmbeddedInstance", "string", false),
    ("EmbeddedObject", "boolean", false),
    ("MaxLen", "uint32", false),
    ("MinLen", "uint32", false),
    ("ModelCorrespondence", "string", true),
    ("Override", "string", false),
    ("Read", "boolean", false),
    ("Required", "boolean", false),
    ("Static", "boolean", false),
    ("Units", "string", false),
    ("ValueMap", "string", true),
    ("Values", "string", true),
    ("Write", "boolean", false),
];

/// Longest source accepted (the built-in file is a few KiB).
pub const MAX_MOF_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Number(String),
    Punct(char),
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    line: usize,
}

impl Lexer<'_> {
    /// The next token and the line it starts on.
    fn next_token(&mut self) -> Result<Option<(Token, usize)>, MofError> {
        loop {
            let Some(&(_, c)) = self.chars.peek() else {
                return Ok(None);
            };
            if c == '\n' {
                self.line += 1;
                self.chars.next();
            } else if c.is_whitespace() {
                self.chars.next();
            } else if c == '/' {
                self.chars.next();
                match self.chars.next() {
                    Some((_, '/')) => {
                        while let Some(&(_, c)) = self.chars.peek() {
                            if c == '\n' {
                                break;
                            }
                            self.chars.next();
                        }
                    }
                    _ => return Err(self.error("a lone '/' (comments start with //)")),
                }
            } else {
                break;
            }
        }
        let line = self.line;
        let Some((_, c)) = self.chars.next() else {
            return Ok(None);
        };
        let token = if c.is_ascii_alphabetic() || c == '_' {
            let mut ident = String::from(c);
            while let Some(&(_, c)) = self.chars.peek() {
                if !(c.is_ascii_alphanumeric() || c == '_') {
                    break;
                }
                ident.push(c);
                self.chars.next();
            }
            Token::Ident(ident)
        } else if c == '"' {
            let mut text = String::new();
            loop {
                match self.chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match self.chars.next() {
                        Some((_, c)) => text.push(c),
                        None => return Err(self.error("a string that does not end")),
                    },
                    Some((_, '\n')) | None => {
                        return Err(self.error("a string that does not end on its line"))
                    }
                    Some((_, c)) => text.push(c),
                }
            }
            Token::Str(text)
        } else if c.is_ascii_digit() || (c == '-' && self.next_is_digit()) {
            let mut number = String::from(c);
            while let Some(&(_, c)) = self.chars.peek() {
                if !c.is_ascii_digit() {
                    break;
                }
                number.push(c);
                self.chars.next();
            }
            Token::Number(number)
        } else if "{}[]();:,=".contains(c) {
            Token::Punct(c)
        } else {
            return Err(self.error(&format!("unexpected character {c:?}")));
        };
        Ok(Some((token, line)))
    }

    fn error(&self, message: &str) -> MofError {
        MofError::Syntax {
            line: self.line,
            message: message.into(),
        }
    }

    fn next_is_digit(&self) -> bool {
        self.chars
            .clone()
            .next()
            .is_some_and(|(_, c)| c.is_ascii_digit())
    }
}

/// Tokens with their lines, and a cursor.
struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
}

impl Parser {
    fn line(&self) -> usize {
        self.tokens
            .get(self.at)
            .or(self.tokens.last())
            .map_or(1, |t| t.1)
    }

    fn error(&self, message: impl Into<String>) -> MofError {
        MofError::Syntax {
            line: self.line(),
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|t| &t.0)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).map(|t| t.0.clone());
        self.at += 1;
        token
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Token::Punct(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), MofError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(format!("expected '{c}'")))
        }
    }

    fn ident(&mut self, what: &str) -> Result<String, MofError> {
        match self.next() {
            Some(Token::Ident(name)) => Ok(name),
            _ => {
                self.at -= 1;
                Err(self.error(format!("expected {what}")))
            }
        }
    }

    /// `[Name, Name(literal), Name {literal, ...}, ...]`, or nothing.
    fn qualifiers(&mut self) -> Result<Qualifiers, MofError> {
        let mut q = Qualifiers::default();
        if !self.eat('[') {
            return Ok(q);
        }
        loop {
            let name = self.ident("a qualifier")?;
            let value = if self.eat('(') {
                let value = self.literal()?;
                self.expect(')')?;
                Some(value)
            } else if self.peek() == Some(&Token::Punct('{')) {
                Some(self.literal()?)
            } else {
                None
            };
            match (name.to_ascii_lowercase().as_str(), value) {
                ("abstract", None) => q.abstract_ = true,
                ("association", None) => q.association = true,
                ("key", None) => q.key = true,
                ("in", None) => q.input = true,
                ("out", None) => q.output = true,
                ("description", Some(Literal::String(text))) => q.description = Some(text),
                (_, value) => q.others.push(self.other_qualifier(&name, value)?),
            }
            if self.eat(']') {
                return Ok(q);
            }
            self.expect(',')?;
        }
    }

    /// A qualifier of [`QUALIFIER_TYPES`], its value checked against its type.
    fn other_qualifier(&self, name: &str, value: Option<Literal>) -> Result<Qualifier, MofError> {
        let Some(&(dmtf_name, cim_type, array)) = QUALIFIER_TYPES
            .iter()
            .find(|(known, ..)| known.eq_ignore_ascii_case(name))
        else {
            return Err(self.error(format!("unknown or misused qualifier {name}")));
        };
        let scalar_fits = |v: &Literal| match (cim_type, v) {
            ("boolean", Literal::Boolean(_)) | ("string", Literal::String(_)) => true,
            ("uint32", Literal::Integer(i)) => u32::try_from(*i).is_ok(),
            _ => false,
        };
        let value = match value {
            None if cim_type == "boolean" && !array => Literal::Boolean(true),
            Some(Literal::Array(items)) if array && items.iter().all(scalar_fits) => {
                Literal::Array(items)
            }
            Some(v) if !array && scalar_fits(&v) => v,
            _ => {
                let shape = if array { "an array of" } else { "a" };
                return Err(self.error(format!("qualifier {dmtf_name} takes {shape} {cim_type}")));
            }
        };
        Ok(Qualifier {
            name: dmtf_name.to_string(),
            cim_type,
            value,
        })
    }

    /// `"text" ["more"...]`, a number, `true`, `false`, or `{literal, ...}`.
    fn literal(&mut self) -> Result<Literal, MofError> {
        match self.next() {
            Some(Token::Str(mut text)) => {
                while let Some(Token::Str(more)) = self.peek() {
                    text.push_str(more);
                    self.at += 1;
                }
                Ok(Literal::String(text))
            }
            Some(Token::Number(n)) => n
                .parse()
                .map(Literal::Integer)
                .map_err(|_| self.error(format!("{n} is out of range"))),
            Some(Token::Ident(word)) if word.eq_ignore_ascii_case("true") => {
                Ok(Literal::Boolean(true))
            }
            Some(Token::Ident(word)) if word.eq_ignore_ascii_case("false") => {
                Ok(Literal::Boolean(false))
            }
            Some(Token::Punct('{')) => {
                let mut items = Vec::new();
                while !self.eat('}') {
                    if !items.is_empty() {
                        self.expect(',')?;
                    }
                    match self.literal()? {
                        Literal::Array(_) => return Err(self.error("an array inside an array")),
                        item => items.push(item),
                    }
                }
                Ok(Literal::Array(items))
            }
            _ => {
                self.at -= 1;
                Err(self.error("expected a value (a string, a number, true, false or {...})"))
            }
        }
    }

    /// `= literal` after a property, checked against its type.
    fn default_value(
        &mut self,
        cim_type: &CimType,
        array: bool,
    ) -> Result<Option<Literal>, MofError> {
        if !self.eat('=') {
            return Ok(None);
        }
        let value = self.literal()?;
        let fits = |v: &Literal| {
            matches!(
                (cim_type, v),
                (CimType::Boolean, Literal::Boolean(_))
                    | (CimType::String | CimType::Datetime, Literal::String(_))
                    | (CimType::Uint(_) | CimType::Sint(_), Literal::Integer(_))
            )
        };
        let ok = match (&value, array) {
            (Literal::Array(items), true) => items.iter().all(fits),
            (v, false) => fits(v),
            _ => false,
        };
        if !ok {
            return Err(self.error(format!(
                "the default value does not fit {}{}",
                cim_type.cim_name(),
                if array { "[]" } else { "" }
            )));
        }
        Ok(Some(value))
    }

    /// `TYPE` or `CLASS REF`.
    fn cim_type(&mut self) -> Result<CimType, MofError> {
        let name = self.ident("a type")?;
        if self.peek() == Some(&Token::Ident("REF".into())) {
            self.at += 1;
            return Ok(CimType::Reference(name));
        }
        CimType::from_mof(&name).ok_or_else(|| {
            self.at -= 1;
            self.error(format!("unknown type {name}"))
        })
    }

    fn class(&mut self) -> Result<Class, MofError> {
        let qualifiers = self.qualifiers()?;
        let line = self.line();
        match self.ident("'class'")?.as_str() {
            "class" => {}
            other => return Err(self.error(format!("expected 'class', got {other}"))),
        }
        let name = self.ident("a class name")?;
        let superclass = if self.eat(':') {
            Some(self.ident("a superclass name")?)
        } else {
            None
        };
        self.expect('{')?;
        let mut properties = Vec::new();
        let mut methods = Vec::new();
        while !self.eat('}') {
            let q = self.qualifiers()?;
            let member_type = self.cim_type()?;
            let member = self.ident("a property or method name")?;
            if self.eat('(') {
                let mut parameters = Vec::new();
                while !self.eat(')') {
                    if !parameters.is_empty() {
                        self.expect(',')?;
                    }
                    let pq = self.qualifiers()?;
                    let ptype = self.cim_type()?;
                    let pname = self.ident("a parameter name")?;
                    let array = self.array()?;
                    parameters.push(Parameter {
                        name: pname,
                        cim_type: ptype,
                        array,
                        input: pq.input || !pq.output,
                        output: pq.output,
                        qualifiers: pq.others,
                    });
                }
                methods.push(Method {
                    name: member,
                    return_type: member_type,
                    parameters,
                    description: q.description,
                    qualifiers: q.others,
                });
            } else {
                let array = self.array()?;
                let default = self.default_value(&member_type, array)?;
                properties.push(Property {
                    name: member,
                    cim_type: member_type,
                    array,
                    key: q.key,
                    description: q.description,
                    qualifiers: q.others,
                    default,
                    class_origin: name.clone(),
                });
            }
            self.expect(';')?;
        }
        self.expect(';')?;
        Ok(Class {
            name,
            superclass,
            is_abstract: qualifiers.abstract_,
            association: qualifiers.association,
            description: qualifiers.description,
            qualifiers: qualifiers.others,
            properties,
            methods,
            line,
        })
    }

    fn array(&mut self) -> Result<bool, MofError> {
        if self.eat('[') {
            self.expect(']')?;
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

/// Parses `source` into its classes, in order.
pub fn parse(source: &str) -> Result<Vec<Class>, MofError> {
    if source.len() > MAX_MOF_BYTES {
        return Err(MofError::TooLarge(source.len()));
    }
    let mut lexer = Lexer {
        chars: source.char_indices().peekable(),
        line: 1,
    };
    let mut tokens = Vec::new();
    while let Some(token) = lexer.next_token()? {
        tokens.push(token);
    }
    let mut parser = Parser { tokens, at: 0 };
    let mut classes = Vec::new();
    while parser.peek().is_some() {
        classes.push(parser.class()?);
    }
    Ok(classes)
}
