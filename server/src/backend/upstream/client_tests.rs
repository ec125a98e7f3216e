use std::io;

use axum::body::Bytes;
use futures::stream;

use super::*;

fn lines_of(
    chunks: Vec<Result<&'static str, io::Error>>,
) -> Lines<impl Stream<Item = Result<Bytes, io::Error>> + Unpin> {
    Lines::new(stream::iter(
        chunks
            .into_iter()
            .map(|c| c.map(|s| Bytes::from_static(s.as_bytes()))),
    ))
}

async fn all(
    mut lines: Lines<impl Stream<Item = Result<Bytes, io::Error>> + Unpin>,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    while let Some(line) = lines.next_line().await? {
        out.push(String::from_utf8(line).unwrap());
    }
    Ok(out)
}

#[tokio::test]
async fn lines_are_split_at_newlines_whatever_the_chunking() {
    let lines = lines_of(vec![
        Ok("{\"a\""),
        Ok(":1}\n{\"b\":2}\n\n{\"c"),
        Ok("\":3}\n"),
    ]);
    assert_eq!(
        all(lines).await.unwrap(),
        vec!["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]
    );
    assert_eq!(all(lines_of(vec![])).await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_body_that_ends_mid_line_or_fails_is_an_error() {
    let error = all(lines_of(vec![Ok("{\"a\":1}\n{\"b\"")]))
        .await
        .unwrap_err();
    assert!(error.contains("middle of a frame"), "{error}");
    let failing = lines_of(vec![
        Ok("{\"a\":1}\n"),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "reset by peer",
        )),
    ]);
    let error = all(failing).await.unwrap_err();
    assert!(error.contains("reset by peer"), "{error}");
}

#[tokio::test]
async fn an_endless_line_is_refused() {
    let chunk: &'static str = Box::leak("x".repeat(1 << 20).into_boxed_str());
    let mut lines = Lines::new(stream::repeat_with(move || {
        Ok::<_, io::Error>(Bytes::from_static(chunk.as_bytes()))
    }));
    let error = lines.next_line().await.unwrap_err();
    assert!(error.contains("longer than"), "{error}");
}

#[test]
fn describe_includes_the_causes() {
    #[derive(Debug)]
    struct Outer(io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error sending request")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }
    let error = Outer(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        "connection refused",
    ));
    assert_eq!(
        describe(&error),
        "error sending request: connection refused"
    );
}
