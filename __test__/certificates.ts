/**
 * X.509 certificates made at test time (no certificate files in the repository): a CA, a
 * server certificate for `localhost` and `127.0.0.1`, a client certificate, a certificate
 * of another CA, and an expired one. ECDSA P-256 keys, made with WebCrypto.
 */
import 'reflect-metadata'

import { webcrypto } from 'node:crypto'

import * as x509 from '@peculiar/x509'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
const HOUR = 3600 * 1000
const DAY = 24 * HOUR

/** A key and its certificate, in PEM. */
export interface Identity {
  key: string
  cert: string
}

/** Everything a TLS test needs. */
export interface Certificates {
  /** The CA's certificate (PEM). */
  ca: string
  server: Identity
  client: Identity
  /** Another CA's certificate, and an identity it signed (valid for localhost, 127.0.0.1). */
  otherCa: string
  stranger: Identity
  /** Signed by the CA, valid for localhost and 127.0.0.1, expired yesterday. */
  expired: Identity
}

let serial = 1

async function keyPem(keys: CryptoKeyPair): Promise<string> {
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey as webcrypto.CryptoKey)
  return x509.PemConverter.encode(pkcs8, 'PRIVATE KEY')
}

async function authority(name: string): Promise<{ keys: CryptoKeyPair; cert: x509.X509Certificate }> {
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: (serial++).toString(16).padStart(2, '0'),
    name: `CN=${name}`,
    notBefore: new Date(Date.now() - HOUR),
    notAfter: new Date(Date.now() + DAY),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  })
  return { keys, cert }
}

async function identity(
  issuer: { keys: CryptoKeyPair; cert: x509.X509Certificate },
  name: string,
  { notBefore = new Date(Date.now() - HOUR), notAfter = new Date(Date.now() + DAY) } = {},
): Promise<Identity> {
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (serial++).toString(16).padStart(2, '0'),
    subject: `CN=${name}, O=wiremesh tests`,
    issuer: issuer.cert.subject,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([
        { type: 'dns', value: 'localhost' },
        { type: 'ip', value: '127.0.0.1' },
      ]),
    ],
  })
  return { key: await keyPem(keys), cert: cert.toString('pem') }
}

let made: Promise<Certificates> | undefined

/** The certificates, made once per process. */
export function certificates(): Promise<Certificates> {
  made ??= (async () => {
    const ca = await authority('wiremesh test CA')
    const other = await authority('another CA')
    return {
      ca: ca.cert.toString('pem'),
      server: await identity(ca, 'server'),
      client: await identity(ca, 'client-1'),
      otherCa: other.cert.toString('pem'),
      stranger: await identity(other, 'stranger'),
      expired: await identity(ca, 'expired', {
        notBefore: new Date(Date.now() - 3 * DAY),
        notAfter: new Date(Date.now() - DAY),
      }),
    }
  })()
  return made
}
