//! Holds (SPEC 12): named rules that protect a customer from every action, read from the
//! customers table or any table pointing at a customer, with an optional `when` condition and
//! an optional protection period (`after` + `for`). Pure: the types and the parser of `when`;
//! [`crate::selection`] writes them as SQL with every value bound.

use crate::db::Ident;
use crate::policy::CalendarPeriod;
use std::fmt;

/// One `[[schema.holds]]` entry (or the legal-hold column, as the hold "legal hold").
#[derive(Debug, Clone)]
pub struct Hold {
    /// Words shown on pages, in counts and in the ledger: "Gift Aid declaration".
    pub name: String,
    pub table: Ident,
    /// The column of `table` holding the customer id; `None` when `table` is the customers table.
    pub column: Option<Ident>,
    /// Every condition must hold for a row to hold its customer (none: every row does).
    pub when: Vec<Condition>,
    /// Protects until this column's time plus the period; `None`: for as long as the row is there.
    pub until: Option<(Ident, CalendarPeriod)>,
}

/// `COLUMN OP VALUE` of a `when`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: Ident,
    pub op: Comparison,
    pub value: Literal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    IsNull,
    IsNotNull,
}

impl Comparison {
    /// The SQL operator (`IS NULL` and `IS NOT NULL` take no value).
    pub fn sql(self) -> &'static str {
        match self {
            Comparison::Eq => "=",
            Comparison::Ne => "<>",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::IsNull => "IS NULL",
            Comparison::IsNotNull => "IS NOT NULL",
        }
    }
}

/// A value a condition compares with; bound as a parameter, never written into SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    /// Only with `is null` / `is not null`.
    None,
}

impl Literal {
    /// What kind of column the value can be compared with, in words for an error.
    pub fn kind(&self) -> &'static str {
        match self {
            Literal::Int(_) | Literal::Float(_) => "a number",
            Literal::Text(_) => "text",
            Literal::Bool(_) => "a boolean",
            Literal::None => "null",
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.column.name(), self.op.sql())
    }
}

/// Parses a `when`: `COLUMN OP VALUE [and COLUMN OP VALUE ...]` with OP one of
/// `= != < <= > >=`, VALUE a number, `'text'` (a quote doubled inside), `true` or `false`; or
/// `COLUMN is null` / `COLUMN is not null`. Words are case-insensitive. The error says what
/// was expected where.
pub fn parse_when(text: &str) -> Result<Vec<Condition>, String> {
    let tokens = tokenize(text)?;
    let mut conditions = Vec::new();
    let mut i = 0;
    loop {
        let Some(Token::Word(column)) = tokens.get(i) else {
            return Err(format!(
                "expected a column name at {}, in {text:?}",
                where_(&tokens, i)
            ));
        };
        let column = Ident::new(column).map_err(|e| format!("{e}, in {text:?}"))?;
        let (op, value, used) = match (tokens.get(i + 1), tokens.get(i + 2), tokens.get(i + 3)) {
            (Some(Token::Word(is)), Some(Token::Word(null)), _)
                if is.eq_ignore_ascii_case("is") && null.eq_ignore_ascii_case("null") =>
            {
                (Comparison::IsNull, Literal::None, 3)
            }
            (Some(Token::Word(is)), Some(Token::Word(not)), Some(Token::Word(null)))
                if is.eq_ignore_ascii_case("is")
                    && not.eq_ignore_ascii_case("not")
                    && null.eq_ignore_ascii_case("null") =>
            {
                (Comparison::IsNotNull, Literal::None, 4)
            }
            (Some(Token::Op(op)), Some(value), _) => {
                let op = match op.as_str() {
                    "=" => Comparison::Eq,
                    "!=" | "<>" => Comparison::Ne,
                    "<" => Comparison::Lt,
                    "<=" => Comparison::Le,
                    ">" => Comparison::Gt,
                    ">=" => Comparison::Ge,
                    other => {
                        return Err(format!(
                            "unknown comparison {other:?} in {text:?}; expected = != < <= > >="
                        ))
                    }
                };
                let value = match value {
                    Token::Number(n) => match n.parse::<i64>() {
                        Ok(i) => Literal::Int(i),
                        Err(_) => Literal::Float(
                            n.parse::<f64>()
                                .map_err(|_| format!("{n:?} is not a number, in {text:?}"))?,
                        ),
                    },
                    Token::Text(t) => Literal::Text(t.clone()),
                    Token::Word(w) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
                    Token::Word(w) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
                    Token::Word(w) if w.eq_ignore_ascii_case("null") => {
                        return Err(format!(
                            "compare with null as \"{} is null\" or \"{} is not null\", in {text:?}",
                            column.name(),
                            column.name()
                        ))
                    }
                    other => {
                        return Err(format!(
                            "expected a value (a number, 'text', true or false) after {}, got {}, in {text:?}",
                            op.sql(),
                            other
                        ))
                    }
                };
                (op, value, 3)
            }
            _ => {
                return Err(format!(
                "expected a comparison (= != < <= > >= or is [not] null) after {:?}, in {text:?}",
                column.name()
            ))
            }
        };
        conditions.push(Condition { column, op, value });
        i += used;
        match tokens.get(i) {
            None => return Ok(conditions),
            Some(Token::Word(and)) if and.eq_ignore_ascii_case("and") => i += 1,
            Some(other) => {
                return Err(format!(
                    "expected \"and\" or the end after a condition, got {other}, in {text:?}"
                ))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Op(String),
    Number(String),
    Text(String),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) | Token::Op(w) | Token::Number(w) => write!(f, "{w:?}"),
            Token::Text(t) => write!(f, "'{t}'"),
        }
    }
}

fn where_(tokens: &[Token], i: usize) -> String {
    match tokens.get(i) {
        Some(t) => format!("{t}"),
        None => "the end".into(),
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Word(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            tokens.push(Token::Number(chars[start..i].iter().collect()));
        } else if c == '\'' {
            let mut value = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("a quote is not closed, in {text:?}")),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        value.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        value.push(other);
                        i += 1;
                    }
                }
            }
            tokens.push(Token::Text(value));
        } else if "=!<>".contains(c) {
            let start = i;
            while i < chars.len() && "=!<>".contains(chars[i]) {
                i += 1;
            }
            tokens.push(Token::Op(chars[start..i].iter().collect()));
        } else {
            return Err(format!("unexpected {c:?} in {text:?}"));
        }
    }
    if tokens.is_empty() {
        return Err(
            "expected a condition such as \"balance_pence != 0\", got an empty text".into(),
        );
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(column: &str, op: Comparison, value: Literal) -> Condition {
        Condition {
            column: Ident::new(column).unwrap(),
            op,
            value,
        }
    }

    #[test]
    fn conditions_are_parsed_with_their_values() {
        assert_eq!(
            parse_when("balance_pence != 0").unwrap(),
            vec![cond("balance_pence", Comparison::Ne, Literal::Int(0))]
        );
        assert_eq!(
            parse_when("status = 'it''s active' AND redeemed_at IS NULL and rate >= -1.5 and vip = TRUE and gone is not null").unwrap(),
            vec![
                cond("status", Comparison::Eq, Literal::Text("it's active".into())),
                cond("redeemed_at", Comparison::IsNull, Literal::None),
                cond("rate", Comparison::Ge, Literal::Float(-1.5)),
                cond("vip", Comparison::Eq, Literal::Bool(true)),
                cond("gone", Comparison::IsNotNull, Literal::None),
            ]
        );
    }

    #[test]
    fn what_does_not_parse_is_named() {
        for (text, expected) in [
            ("", "empty"),
            ("balance_pence", "expected a comparison"),
            ("balance_pence != ", "expected a comparison"),
            ("balance_pence ~ 0", "unexpected '~'"),
            ("balance_pence != 0 or x = 1", "expected \"and\""),
            ("balance_pence != 0; DROP TABLE x", "unexpected ';'"),
            ("status = 'open", "not closed"),
            ("x = null", "x is null"),
            ("x =< 1", "unknown comparison"),
            ("1 = 1", "expected a column name"),
            ("x = y", "expected a value"),
            ("x = 1 and", "expected a column name at the end"),
        ] {
            let e = parse_when(text).unwrap_err();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }
}
