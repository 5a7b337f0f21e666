//! Turns SQL text into statements: sqlparser (`GenericDialect`) plus three extensions it
//! does not know, handled on the token stream before parsing:
//!
//! - `UPSERT INTO t ...` is parsed as `INSERT INTO t ...` and flagged as an upsert;
//! - `ALTER TABLE t SPLIT AT VALUES (pk...), (pk...)` becomes [`Stmt::Split`];
//! - `STRING(MAX)` and `BYTES(MAX)` (Spanner) mean unbounded `STRING` and `BYTES`.
//!
//! The input is split at top-level `;` and every statement is parsed before any runs, so a
//! syntax error anywhere runs nothing.

use sqlparser::ast::{self, SetExpr, Statement};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::error::{SqlError, SqlResult};

/// One parsed statement.
#[derive(Debug, Clone)]
pub enum Stmt {
    /// A statement sqlparser understands. `upsert`: it was written `UPSERT`.
    Sql {
        /// The statement.
        stmt: Box<Statement>,
        /// Written as `UPSERT INTO`.
        upsert: bool,
    },
    /// `ALTER TABLE t SPLIT AT VALUES (...), ...`.
    Split {
        /// The table.
        table: ast::ObjectName,
        /// Each split point: a primary key or a prefix of one.
        points: Vec<Vec<ast::Expr>>,
    },
}

fn syntax(e: impl std::fmt::Display) -> SqlError {
    SqlError::syntax(format!(
        "{e}; check the statement against the SQL reference"
    ))
}

/// Parses `sql` into statements (empty statements are skipped).
pub fn parse(sql: &str) -> SqlResult<Vec<Stmt>> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(syntax)?;
    let mut out = Vec::new();
    for group in tokens.split(|t| t.token == Token::SemiColon) {
        if group
            .iter()
            .all(|t| matches!(t.token, Token::Whitespace(_) | Token::EOF))
        {
            continue;
        }
        out.push(parse_one(group.to_vec())?);
    }
    Ok(out)
}

fn is_word(t: Option<&TokenWithSpan>, kw: &str) -> bool {
    matches!(t.map(|t| &t.token), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
}

fn parse_one(tokens: Vec<TokenWithSpan>) -> SqlResult<Stmt> {
    let mut tokens: Vec<TokenWithSpan> = tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .collect();
    strip_max_lengths(&mut tokens);
    let mut upsert = false;
    if is_word(tokens.first(), "UPSERT") {
        upsert = true;
        if let Some(first) = tokens.first_mut() {
            first.token = Token::make_keyword("INSERT");
        }
    }
    if is_word(tokens.first(), "ALTER")
        && is_word(tokens.get(1), "TABLE")
        && is_word(tokens.get(3), "SPLIT")
    {
        return parse_split(tokens);
    }
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let stmt = parser.parse_statement().map_err(syntax)?;
    let rest = parser.peek_token();
    if rest.token != Token::EOF {
        return Err(syntax(format!(
            "unexpected {} after the statement",
            rest.token
        )));
    }
    Ok(Stmt::Sql {
        stmt: Box::new(stmt),
        upsert,
    })
}

/// Removes `( MAX )` after STRING or BYTES.
fn strip_max_lengths(tokens: &mut Vec<TokenWithSpan>) {
    let mut i = 0;
    while i + 3 < tokens.len() {
        let is_type = is_word(tokens.get(i), "STRING") || is_word(tokens.get(i), "BYTES");
        if is_type
            && tokens.get(i + 1).map(|t| &t.token) == Some(&Token::LParen)
            && is_word(tokens.get(i + 2), "MAX")
            && tokens.get(i + 3).map(|t| &t.token) == Some(&Token::RParen)
        {
            tokens.drain(i + 1..i + 4);
        }
        i += 1;
    }
}

fn parse_split(tokens: Vec<TokenWithSpan>) -> SqlResult<Stmt> {
    let usage = "write ALTER TABLE t SPLIT AT VALUES (key...), (key...)";
    let table = match tokens.get(2).map(|t| &t.token) {
        Some(Token::Word(w)) if w.keyword == Keyword::NoKeyword || w.quote_style.is_some() => {
            ast::ObjectName::from(vec![ast::Ident {
                value: w.value.clone(),
                quote_style: w.quote_style,
                span: sqlparser::tokenizer::Span::empty(),
            }])
        }
        Some(Token::Word(w)) => ast::ObjectName::from(vec![ast::Ident::new(w.value.clone())]),
        _ => return Err(SqlError::syntax(format!("expected a table name; {usage}"))),
    };
    if !is_word(tokens.get(4), "AT") || !is_word(tokens.get(5), "VALUES") {
        return Err(SqlError::syntax(usage));
    }
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens[5..].to_vec());
    let query = parser.parse_query().map_err(syntax)?;
    if parser.peek_token().token != Token::EOF {
        return Err(SqlError::syntax(usage));
    }
    let SetExpr::Values(values) = *query.body else {
        return Err(SqlError::syntax(usage));
    };
    Ok(Stmt::Split {
        table,
        points: values.rows.into_iter().map(|r| r.content).collect(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn splits_statements_and_extensions() {
        let s = parse(
            "SELECT 1; ; UPSERT INTO t (a) VALUES (1);ALTER TABLE t SPLIT AT VALUES (1), (2, 'x')",
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        assert!(matches!(&s[1], Stmt::Sql { upsert: true, .. }));
        let Stmt::Split { points, .. } = &s[2] else {
            panic!("not a split")
        };
        assert_eq!(points.len(), 2);
        assert_eq!(points[1].len(), 2);
        assert!(parse("CREATE TABLE t (a STRING(MAX) PRIMARY KEY)").is_ok());
        assert!(parse("SELECT 'a;b'").unwrap().len() == 1);
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(parse("SELEC 1").unwrap_err().code, crate::ErrorCode::Syntax);
        assert!(parse("ALTER TABLE t SPLIT 1").is_err());
        assert!(parse("SELECT 1 2").is_err());
    }
}
