//! A parser for the subset of MOF (DMTF DSP0221) that `classes.mof` uses:
//! class declarations with a superclass, qualifier lists, properties (with
//! arrays and `REF` types) and methods with parameters. Errors name the line.

use crate::{CimType, Class, Method, MofError, Parameter, Property, Qualifiers};

/// Longest source accepted (the built-in file is a few KiB).
pub const MAX_MOF_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
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
        } else if "{}[]();:,".contains(c) {
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

    /// `[Name, Name("text"), ...]`, or nothing.
    fn qualifiers(&mut self) -> Result<Qualifiers, MofError> {
        let mut q = Qualifiers::default();
        if !self.eat('[') {
            return Ok(q);
        }
        loop {
            let name = self.ident("a qualifier")?;
            let value = if self.eat('(') {
                let value = match self.next() {
                    Some(Token::Str(text)) => text,
                    _ => return Err(self.error(format!("qualifier {name} takes a string"))),
                };
                self.expect(')')?;
                Some(value)
            } else {
                None
            };
            match (name.to_ascii_lowercase().as_str(), value) {
                ("abstract", None) => q.abstract_ = true,
                ("association", None) => q.association = true,
                ("key", None) => q.key = true,
                ("in", None) => q.input = true,
                ("out", None) => q.output = true,
                ("description", Some(text)) => q.description = Some(text),
                _ => return Err(self.error(format!("unknown or misused qualifier {name}"))),
            }
            if self.eat(']') {
                return Ok(q);
            }
            self.expect(',')?;
        }
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
                    });
                }
                methods.push(Method {
                    name: member,
                    return_type: member_type,
                    parameters,
                    description: q.description,
                });
            } else {
                let array = self.array()?;
                properties.push(Property {
                    name: member,
                    cim_type: member_type,
                    array,
                    key: q.key,
                    description: q.description,
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
