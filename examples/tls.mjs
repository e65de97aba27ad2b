// TLS between two hosts, with mutual authentication: each side proves who it is with a
// certificate signed by a CA both trust. Here the two hosts are two processes on loopback:
// this one (the client host) makes the certificates, starts the server host
// (`node tls.mjs server <dir>`), dials it and exchanges a few messages.
//
// The certificates are made at run time with @peculiar/x509 (npm install @peculiar/x509);
// on real hosts you would make them once, for instance with openssl:
//
//   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
//     -subj /CN=my-ca -keyout ca-key.pem -out ca.pem
//   openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=db-host \
//     -keyout server-key.pem -out server.csr
//   openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -days 365 \
//     -extfile <(printf 'subjectAltName=DNS:db-host') -out server.pem
//   (and the same for client.pem and client-key.pem, with the client's name)
//
// then copy ca.pem to both hosts, and each host's own certificate and key to it alone.

import { spawn } from 'node:child_process'
import { webcrypto } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

import { Envelope, Mesh, TlsTransport } from 'wiremesh'

// ---- the server host --------------------------------------------------------------------

async function server(dir) {
  const transport = new TlsTransport({
    key: readFileSync(join(dir, 'server-key.pem')),
    cert: readFileSync(join(dir, 'server.pem')),
    ca: readFileSync(join(dir, 'ca.pem')),
    requestCert: true, // clients must present a certificate signed by ca.pem
  })
  const listener = await transport.listen('tcps://127.0.0.1:0')
  console.log(listener.endpoint) // tells the client host where to dial

  const mesh = new Mesh(1024, 256)
  const connection = await listener.accept() // resolves once the client is authenticated
  listener.close()
  const client = connection.peerCertificate.subject.CN
  mesh.add(connection)
  mesh.on('disconnect', () => mesh.shutdown()) // the client hung up: we are done
  for await (const { id, payload } of mesh) {
    await mesh.sendWait(new Envelope(id, `${payload} (seen by the server, from ${client})`))
  }
}

// ---- the client host --------------------------------------------------------------------

/** A CA, and a certificate it signs for `server.example` (and 127.0.0.1) and for `client-1`. */
async function makeCertificates(dir) {
  await import('reflect-metadata') // @peculiar/x509 needs it loaded first
  const x509 = await import('@peculiar/x509')
  x509.cryptoProvider.set(webcrypto)
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
  const day = 24 * 3600 * 1000
  const validity = { notBefore: new Date(Date.now() - day), notAfter: new Date(Date.now() + day) }
  const pem = async (keys) =>
    x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY')

  const caKeys = await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=example CA',
    keys: caKeys,
    signingAlgorithm: algorithm,
    ...validity,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
    ],
  })
  writeFileSync(join(dir, 'ca.pem'), ca.toString('pem'))

  let serial = 2
  for (const [file, name, names] of [
    [
      'server',
      'server.example',
      [
        { type: 'dns', value: 'server.example' },
        { type: 'ip', value: '127.0.0.1' },
      ],
    ],
    ['client', 'client-1', [{ type: 'dns', value: 'client-1' }]],
  ]) {
    const keys = await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: String(serial++).padStart(2, '0'),
      subject: `CN=${name}`,
      issuer: ca.subject,
      publicKey: keys.publicKey,
      signingKey: caKeys.privateKey,
      signingAlgorithm: algorithm,
      ...validity,
      extensions: [
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension(names),
      ],
    })
    writeFileSync(join(dir, `${file}.pem`), cert.toString('pem'))
    writeFileSync(join(dir, `${file}-key.pem`), await pem(keys))
  }
}

async function client() {
  const dir = mkdtempSync(join(tmpdir(), 'wiremesh-tls-'))
  try {
    await makeCertificates(dir)

    // The server host: another process, which prints its endpoint when it listens.
    const host = spawn(process.execPath, [fileURLToPath(import.meta.url), 'server', dir], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const exited = new Promise((resolve) => host.on('exit', (code, signal) => resolve(code ?? signal)))
    const endpoint = await Promise.race([
      once(createInterface({ input: host.stdout }), 'line').then(([line]) => line),
      exited.then((status) => Promise.reject(new Error(`the server host exited with ${status} before it listened`))),
    ])

    const transport = new TlsTransport({
      key: readFileSync(join(dir, 'client-key.pem')),
      cert: readFileSync(join(dir, 'client.pem')),
      ca: readFileSync(join(dir, 'ca.pem')), // trust servers signed by our CA, not the public roots
    })
    const mesh = new Mesh(1024, 256)
    const id = mesh.add(await transport.connect(endpoint, { timeout: 5000 })) // the server is authenticated here
    console.log(`connected to ${endpoint}, the server is ${mesh.peerCertificate(id).subject.CN}`)

    for (let n = 1; n <= 3; n++) {
      await mesh.sendWait(new Envelope(id, `message ${n}`))
      const { payload } = await mesh.recvTimeout(5000)
      console.log(`${payload}`)
    }
    ;(await mesh.remove(id)).disconnect() // close_notify, then the server host ends
    mesh.shutdown()
    const status = await exited
    if (status !== 0) throw new Error(`the server host exited with ${status}`)
    console.log('the server host exited cleanly')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

if (process.argv[2] === 'server') await server(process.argv[3])
else await client()
