//! A node serves as a mirror should: an account its own server has withdrawn is not shown to
//! the public (the lexicons' error names say why), while its owner, with service auth from
//! their own PDS signed by the account's key, still takes their copy back. Blobs go out with
//! the type their records declare.

use std::sync::Arc;

use p2pds::identity::Resolver;
use p2pds::serve::{self, ServeConfig};
use p2pds::store::{self, Store};
use p2pds::sync::Syncer;
use serde_json::{json, Value};

use crate::pds;

/// The DID the node's own account has (the audience of tokens meant for this node).
const NODE_DID: &str = "did:plc:mirrornodemirrornodemirr";

/// A service-auth token from the account's PDS for `aud` and `lxm`.
async fn service_auth(acct: &pds::Account, aud: &str, lxm: &str) -> String {
    let exp = (chrono::Utc::now().timestamp() + 300).to_string();
    let res = reqwest::Client::new()
        .get(format!(
            "{}/xrpc/com.atproto.server.getServiceAuth",
            acct.pds
        ))
        .query(&[("aud", aud), ("lxm", lxm), ("exp", exp.as_str())])
        .bearer_auth(&acct.access_jwt)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert!(
        status.is_success(),
        "getServiceAuth {aud} {lxm}: {status} {body}"
    );
    body["token"].as_str().unwrap().to_string()
}

async fn get(url: &str, token: Option<&str>) -> (u16, Vec<u8>, Option<String>) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let mime = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, res.bytes().await.unwrap().to_vec(), mime)
}

fn error_name(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v["error"].as_str().unwrap_or("(no XRPC error)").to_string()
}

/// A node holding a verified copy of `did` and serving it on loopback, with `node_did` as the
/// account signed in on it (the audience of tokens meant for it): its folder, its syncer (to
/// sync again) and its address.
async fn serving_node(did: &str, node_did: Option<&str>) -> (tempfile::TempDir, Syncer, String) {
    let bed = pds::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
    let http = reqwest::Client::new();
    let syncer = Syncer::new(
        store.clone(),
        http.clone(),
        Arc::new(Resolver::new(http, &bed.plc, None)),
        dir.path(),
    );
    let (d, node_did) = (did.to_string(), node_did.map(str::to_string));
    store
        .write(move |c| {
            store::add_repo(c, &d, None, None)?;
            if let Some(node_did) = node_did {
                c.execute(
                    "INSERT INTO account (id, did, handle, pds, signed_in_at)
                     VALUES (1, ?1, NULL, 'http://127.0.0.1:1', '2026-01-01T00:00:00Z')",
                    [node_did],
                )?;
            }
            Ok::<_, store::StoreError>(())
        })
        .await
        .unwrap()
        .unwrap();
    syncer.sync_repo(did, &|_| {}).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve::serve(
        listener,
        store,
        syncer.blob_dir(),
        ServeConfig::default(),
        std::future::pending(),
    ));
    (dir, syncer, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_account_is_shown_only_to_its_owner() {
    let bed = pds::shared().await;
    let acct = bed.create_account("mirror").await.unwrap();
    acct.create_record(
        "app.bsky.feed.post",
        json!({"$type": "app.bsky.feed.post", "text": "hello", "createdAt": "2024-01-01T00:00:00Z"}),
    )
    .await
    .unwrap();
    let png = acct
        .upload_blob(b"\x89PNG\r\n\x1a\n not really".to_vec(), "image/png")
        .await
        .unwrap();
    let blob_cid = png["ref"]["$link"].as_str().unwrap().to_string();
    acct.put_record(
        "app.bsky.actor.profile",
        "self",
        json!({"$type": "app.bsky.actor.profile", "avatar": png}),
    )
    .await
    .unwrap();

    let (_dir, syncer, url) = serving_node(&acct.did, Some(NODE_DID)).await;
    let xrpc = |nsid: &str, query: &str| format!("{url}/xrpc/com.atproto.sync.{nsid}?{query}");
    let did_q = format!("did={}", acct.did);
    let blob_q = format!("did={}&cid={blob_cid}", acct.did);

    // Active: served to anyone, the blob with the type its record declares.
    let (status, public_car, _) = get(&xrpc("getRepo", &did_q), None).await;
    assert_eq!(status, 200);
    let (status, bytes, mime) = get(&xrpc("getBlob", &blob_q), None).await;
    assert_eq!(status, 200);
    assert!(bytes.starts_with(b"\x89PNG"));
    assert_eq!(mime.as_deref(), Some("image/png"));
    let (_, status_body, _) = get(&xrpc("getRepoStatus", &did_q), None).await;
    let v: Value = serde_json::from_slice(&status_body).unwrap();
    assert_eq!(v["active"], true);
    assert!(v["rev"].is_string());

    // Deactivated on its own server, seen by the next sync.
    let repo_token = service_auth(&acct, NODE_DID, "com.atproto.sync.getRepo").await;
    let blob_token = service_auth(&acct, NODE_DID, "com.atproto.sync.getBlob").await;
    let other_node = service_auth(
        &acct,
        "did:plc:someothernodesomeotherzz",
        "com.atproto.sync.getRepo",
    )
    .await;
    acct.deactivate().await.unwrap();
    syncer.sync_repo(&acct.did, &|_| {}).await.unwrap();

    for nsid in ["getRepo", "getLatestCommit", "listBlobs"] {
        let (status, body, _) = get(&xrpc(nsid, &did_q), None).await;
        assert_eq!(
            (status, error_name(&body)),
            (400, "RepoDeactivated".into()),
            "{nsid}"
        );
    }
    let (status, body, _) = get(&xrpc("getBlob", &blob_q), None).await;
    assert_eq!((status, error_name(&body)), (400, "RepoDeactivated".into()));
    let (_, status_body, _) = get(&xrpc("getRepoStatus", &did_q), None).await;
    let v: Value = serde_json::from_slice(&status_body).unwrap();
    assert_eq!(
        (v["active"].clone(), v["status"].clone()),
        (json!(false), json!("deactivated"))
    );
    assert!(v.get("rev").is_none(), "{v}");
    let (_, list, _) = get(&xrpc("listRepos", ""), None).await;
    let list: Value = serde_json::from_slice(&list).unwrap();
    let entry = list["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["did"] == json!(acct.did))
        .unwrap();
    assert_eq!(entry["active"], false);
    assert_eq!(entry["status"], "deactivated");

    // Its owner still takes the copy back, with a token for this node and this method only.
    let (status, owner_car, _) = get(&xrpc("getRepo", &did_q), Some(&repo_token)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&owner_car));
    assert_eq!(owner_car, public_car);
    let (status, bytes, mime) = get(&xrpc("getBlob", &blob_q), Some(&blob_token)).await;
    assert_eq!((status, mime.as_deref()), (200, Some("image/png")));
    assert!(bytes.starts_with(b"\x89PNG"));
    for (nsid, query, token) in [
        ("getRepo", &did_q, &blob_token),
        ("getBlob", &blob_q, &repo_token),
        ("getRepo", &did_q, &other_node),
    ] {
        let (status, body, _) = get(&xrpc(nsid, query), Some(token)).await;
        assert_eq!(
            (status, error_name(&body)),
            (401, "AuthenticationRequired".into()),
            "{nsid}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    // Active again: served to all again.
    acct.activate().await.unwrap();
    syncer.sync_repo(&acct.did, &|_| {}).await.unwrap();
    let (status, _, _) = get(&xrpc("getRepo", &did_q), None).await;
    assert_eq!(status, 200);
}

/// `GET` an XRPC query with an optional bearer token; the answer's JSON.
async fn xrpc_json(base: &str, nsid: &str, query: &[(&str, &str)], token: Option<&str>) -> Value {
    let mut req = reqwest::Client::new()
        .get(format!("{base}/xrpc/{nsid}"))
        .query(query);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert!(status.is_success(), "{nsid}: {status} {body}");
    body
}

/// `POST` to an XRPC procedure; the answer's JSON.
async fn xrpc_post(
    base: &str,
    nsid: &str,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Value {
    let res = reqwest::Client::new()
        .post(format!("{base}/xrpc/{nsid}"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert!(status.is_success(), "{nsid}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Every record of a repo CAR: "collection/rkey" → record CID.
fn records_in(car: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut reader = p2pds::repo::car::CarReader::new(car).unwrap();
    let root = reader.roots()[0];
    let mut blocks = std::collections::HashMap::new();
    while let Some((cid, data)) = reader.next_block().unwrap() {
        blocks.insert(cid, data.to_vec());
    }
    let commit = p2pds::repo::commit::Commit::decode(&blocks[&root]).unwrap();
    let mut out = std::collections::BTreeMap::new();
    p2pds::repo::mst::walk(&mut blocks, commit.data, |key, cid| {
        out.insert(String::from_utf8_lossy(key).into_owned(), cid.to_string());
        Ok::<(), p2pds::repo::mst::MstError>(())
    })
    .unwrap();
    out
}

/// A friend's `p2pds serve` is enough to move an account with the protocol's own calls: the
/// repo fetched with `getRepo` is imported by the reference PDS (`importRepo`), and every blob
/// `listBlobs` names is fetched with `getBlob` and uploaded, until the new server misses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_moves_to_a_new_server_from_a_friends_copy_with_standard_calls() {
    let bed = pds::shared().await;
    let new_pds = bed.start_extra_pds().await.unwrap();
    let acct = bed.create_account("moving").await.unwrap();
    for i in 0..40 {
        acct.create_record(
            "app.bsky.feed.post",
            json!({"$type": "app.bsky.feed.post", "text": format!("post {i}"), "createdAt": "2024-01-01T00:00:00Z"}),
        )
        .await
        .unwrap();
    }
    let mut blobs = std::collections::BTreeMap::new();
    for (i, mime) in ["image/png", "image/jpeg", "image/webp"].iter().enumerate() {
        let bytes = format!("picture {i} of {}", acct.did).into_bytes();
        let blob = acct.upload_blob(bytes.clone(), mime).await.unwrap();
        // The type the record declares is the one the PDS gave the upload.
        let declared = blob["mimeType"].as_str().unwrap().to_string();
        blobs.insert(
            blob["ref"]["$link"].as_str().unwrap().to_string(),
            (bytes, declared),
        );
        acct.create_record(
            "app.bsky.feed.post",
            json!({"$type": "app.bsky.feed.post", "text": format!("picture {i}"),
                   "createdAt": "2024-01-01T00:00:00Z",
                   "embed": {"$type": "app.bsky.embed.images", "images": [{"alt": "", "image": blob}]}}),
        )
        .await
        .unwrap();
    }

    // The friend's node holds a verified copy and serves it.
    let (_dir, _syncer, node) = serving_node(&acct.did, None).await;

    // The account on a new server, migration style (service auth from its current one).
    let new_did = xrpc_json(&new_pds.pds, "com.atproto.server.describeServer", &[], None).await
        ["did"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = service_auth(&acct, &new_did, "com.atproto.server.createAccount").await;
    let front = acct.handle.trim_end_matches(".test");
    let created = xrpc_post(
        &new_pds.pds,
        "com.atproto.server.createAccount",
        &auth,
        "application/json",
        json!({"did": acct.did, "handle": format!("{front}2.test"),
               "email": format!("{front}2@example.com"), "password": "a long password here"})
        .to_string()
        .into_bytes(),
    )
    .await;
    let token = created["accessJwt"].as_str().unwrap().to_string();

    // Everything comes from the friend's node.
    let (status, car, _) = get(
        &format!("{node}/xrpc/com.atproto.sync.getRepo?did={}", acct.did),
        None,
    )
    .await;
    assert_eq!(status, 200);
    xrpc_post(
        &new_pds.pds,
        "com.atproto.repo.importRepo",
        &token,
        "application/vnd.ipld.car",
        car.clone(),
    )
    .await;
    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let mut query = vec![("did", acct.did.as_str()), ("limit", "2")];
        if !cursor.is_empty() {
            query.push(("cursor", cursor.as_str()));
        }
        let page = xrpc_json(&node, "com.atproto.sync.listBlobs", &query, None).await;
        listed.extend(
            page["cids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string()),
        );
        match page["cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(
        listed
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        blobs.keys().cloned().collect()
    );
    for cid in &listed {
        let (status, bytes, mime) = get(
            &format!(
                "{node}/xrpc/com.atproto.sync.getBlob?did={}&cid={cid}",
                acct.did
            ),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            (&bytes, mime.as_deref().unwrap()),
            (&blobs[cid].0, blobs[cid].1.as_str())
        );
        let uploaded = xrpc_post(
            &new_pds.pds,
            "com.atproto.repo.uploadBlob",
            &token,
            mime.as_deref().unwrap(),
            bytes,
        )
        .await;
        assert_eq!(uploaded["blob"]["ref"]["$link"], json!(cid));
    }

    // The new server holds it all: nothing missing, the same records as the old one.
    let missing = xrpc_json(
        &new_pds.pds,
        "com.atproto.repo.listMissingBlobs",
        &[],
        Some(&token),
    )
    .await;
    assert_eq!(missing["blobs"], json!([]), "{missing}");
    let status = xrpc_json(
        &new_pds.pds,
        "com.atproto.server.checkAccountStatus",
        &[],
        Some(&token),
    )
    .await;
    assert_eq!(status["importedBlobs"], json!(blobs.len()), "{status}");
    assert_eq!(status["expectedBlobs"], json!(blobs.len()), "{status}");
    let old_car = acct.get_repo_car().await.unwrap();
    let new_car = xrpc_get_bytes(&new_pds.pds, &acct.did, &token).await;
    assert_eq!(records_in(&new_car), records_in(&old_car));
    assert_eq!(records_in(&car), records_in(&old_car));
}

/// The repo a PDS holds for `did` (asked by its owner: the moved account is not active yet).
async fn xrpc_get_bytes(base: &str, did: &str, token: &str) -> Vec<u8> {
    let res = reqwest::Client::new()
        .get(format!("{base}/xrpc/com.atproto.sync.getRepo"))
        .query(&[("did", did)])
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "getRepo: {}", res.status());
    res.bytes().await.unwrap().to_vec()
}
