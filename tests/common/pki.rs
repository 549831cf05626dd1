//! A test PKI made with the openssl CLI: a CA and ECDSA P-256 leaves
//! (servers by DNS name or IP, clients by subject; RSA server leaves too)
//! in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::tempdir;

/// `openssl req -newkey` arguments of the leaf key types.
const EC_P256: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
const RSA_2048: &[&str] = &["rsa:2048"];

pub struct Pki {
    pub dir: tempdir::Dir,
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is needed for these tests (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub fn new() -> Pki {
        Pki::named("ringlb test CA")
    }

    /// A CA whose subject is `CN=cn`.
    pub fn named(cn: &str) -> Pki {
        let dir = tempdir::Dir::new("pki");
        let subj = format!("/CN={cn}");
        openssl(
            &dir.0,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                &subj,
                "-days",
                "30",
            ],
        );
        Pki { dir }
    }

    /// A CA (`ca.pem`) and one server leaf `server.pem`/`server.key` for
    /// `dns`: for tests that just need a certificate clients can trust.
    pub fn server(dns: &str) -> Pki {
        let pki = Pki::new();
        pki.leaf("server", &[dns], 2);
        pki
    }

    /// A path as text (for configs and command lines).
    pub fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    /// A server leaf `name.pem`/`name.key` (PKCS#8 P-256 key) for `dns`
    /// names, valid for `days` (negative: already expired).
    pub fn leaf(&self, name: &str, dns: &[&str], days: i32) {
        self.leaf_of(EC_P256, name, dns, days);
    }

    /// [`Pki::leaf`] with an RSA 2048 key (for ECDHE-RSA clients).
    pub fn rsa_leaf(&self, name: &str, dns: &[&str]) {
        self.leaf_of(RSA_2048, name, dns, 30);
    }

    fn leaf_of(&self, key: &[&str], name: &str, dns: &[&str], days: i32) {
        let san: Vec<String> = dns.iter().map(|n| format!("DNS:{n}")).collect();
        self.sign_with(
            key,
            name,
            &format!("/CN={}", dns[0]),
            &format!("subjectAltName={}\n", san.join(",")),
            days,
        );
    }

    /// A server leaf whose only name is its common name (no subject
    /// alternative name), as old private CAs issue them.
    pub fn cn_leaf(&self, name: &str, cn: &str) {
        self.sign(
            name,
            &format!("/CN={cn}"),
            "basicConstraints=CA:FALSE\n",
            30,
        );
    }

    /// [`Pki::cn_leaf`] as X.509 v1: no extensions at all (what
    /// `openssl x509 -req` without `-extfile` makes).
    pub fn v1_leaf(&self, name: &str, cn: &str) {
        self.sign(name, &format!("/CN={cn}"), "", 30);
    }

    /// A self-signed server certificate `name.pem`/`name.key`, made the way
    /// most how-tos make one (`openssl req -x509`, which marks it a CA);
    /// `san`: its `subjectAltName` value, if any.
    pub fn self_signed(&self, name: &str, cn: &str, san: Option<&str>) {
        let key = format!("{name}.key");
        let pem = format!("{name}.pem");
        let subj = format!("/CN={cn}");
        let mut args = vec!["req", "-x509", "-newkey"];
        args.extend_from_slice(EC_P256);
        args.extend_from_slice(&["-nodes", "-keyout", &key, "-out", &pem, "-subj", &subj]);
        let ext = san.map(|s| format!("subjectAltName={s}"));
        if let Some(ext) = &ext {
            args.extend_from_slice(&["-addext", ext]);
        }
        args.extend_from_slice(&["-days", "30"]);
        openssl(&self.dir.0, &args);
    }

    /// A server leaf for IP addresses only (`IP:` subject alternative names).
    pub fn ip_leaf(&self, name: &str, ips: &[&str]) {
        let san: Vec<String> = ips.iter().map(|n| format!("IP:{n}")).collect();
        self.sign(
            name,
            &format!("/CN={}", ips[0]),
            &format!("subjectAltName={}\n", san.join(",")),
            30,
        );
    }

    /// A client leaf with subject `subj` (openssl `/K=V/...` form, first
    /// RDN first), for TLS client authentication.
    pub fn client(&self, name: &str, subj: &str) {
        self.sign(name, subj, "extendedKeyUsage=clientAuth\n", 30);
    }

    fn sign(&self, name: &str, subj: &str, ext_text: &str, days: i32) {
        self.sign_with(EC_P256, name, subj, ext_text, days);
    }

    fn sign_with(&self, key_args: &[&str], name: &str, subj: &str, ext_text: &str, days: i32) {
        let d = &self.dir.0;
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let ext = format!("{name}.ext");
        let mut req = vec!["req", "-new", "-newkey"];
        req.extend_from_slice(key_args);
        req.extend_from_slice(&["-nodes", "-keyout", &key, "-out", &csr, "-subj", subj]);
        openssl(d, &req);
        std::fs::write(d.join(&ext), ext_text).unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                &days.to_string(),
                "-extfile",
                &ext,
            ],
        );
    }

    /// The leaf's DER bytes, hex (what Python reports for the served cert).
    pub fn der_hex(&self, name: &str) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(self.path(&format!("{name}.pem")))
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout.iter().map(|b| format!("{b:02x}")).collect()
    }
}
