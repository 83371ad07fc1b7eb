import t from 'tap'
import { isOriginAllowed } from '../plugin/security/origin.js'
import { isGranted, isValidPattern } from '../plugin/security/grants.js'
import { TokenBucket } from '../plugin/security/token-bucket.js'
import { isLoopback, isLoopbackHost } from '../plugin/security/loopback.js'
import { redactSecrets } from '../plugin/log-redaction.js'

t.test('origins: same host by default, compared case-insensitively', async (t) => {
  const policy = { allowedOrigins: [], requireOrigin: false }
  t.ok(isOriginAllowed('http://hub.example.com', 'hub.example.com', policy))
  t.ok(isOriginAllowed('https://HUB.Example.com:8443', 'hub.example.COM:8443', policy))
  t.notOk(isOriginAllowed('http://hub.example.com:8080', 'hub.example.com', policy), 'another port is another origin')
  t.notOk(isOriginAllowed('https://evil.example', 'hub.example.com', policy))
  t.notOk(isOriginAllowed('null', 'hub.example.com', policy))
  t.notOk(isOriginAllowed('not a url', 'hub.example.com', policy))
  t.notOk(isOriginAllowed('file:///home/me/page.html', 'hub.example.com', policy), 'an opaque origin is never trusted')
  t.notOk(isOriginAllowed('http://hub.example.com', undefined, policy))
  t.ok(isOriginAllowed(undefined, 'hub.example.com', policy), 'no Origin: not a browser, allowed')
  t.notOk(isOriginAllowed(undefined, 'hub.example.com', { ...policy, requireOrigin: true }))
})

t.test('origins: the default policy checks the scheme too', async (t) => {
  const policy = { allowedOrigins: [], requireOrigin: false }
  for (const scheme of ['ftp', 'ws', 'wss', 'chrome-extension', 'gopher']) {
    t.notOk(isOriginAllowed(`${scheme}://hub.example.com`, 'hub.example.com', policy), `${scheme}: is no web page of this site`)
  }
  t.notOk(isOriginAllowed('http://hub.example.com', 'hub.example.com', policy, true), 'an http page may not reach a TLS socket')
  t.ok(isOriginAllowed('https://hub.example.com', 'hub.example.com', policy, true))
  t.ok(isOriginAllowed('https://hub.example.com', 'hub.example.com', policy, false), 'TLS ended by a proxy in front')
})

t.test('origins: an allow-list of exact origins and *. patterns, with no substring tricks', async (t) => {
  const policy = { allowedOrigins: ['https://app.example.com', 'https://*.example.org', 'http://localhost:5173'], requireOrigin: false }
  t.ok(isOriginAllowed('https://app.example.com', 'hub', policy))
  t.ok(isOriginAllowed('https://APP.EXAMPLE.COM', 'hub', policy))
  t.ok(isOriginAllowed('http://localhost:5173', 'hub', policy))
  t.ok(isOriginAllowed('https://a.example.org', 'hub', policy))
  t.ok(isOriginAllowed('https://a.b.example.org', 'hub', policy))
  t.notOk(isOriginAllowed('https://example.org', 'hub', policy), 'the pattern needs a subdomain')
  t.notOk(isOriginAllowed('http://a.example.org', 'hub', policy), 'the scheme must match')
  t.notOk(isOriginAllowed('https://evilexample.org', 'hub', policy))
  t.notOk(isOriginAllowed('https://app.example.com.evil.example', 'hub', policy))
  t.notOk(isOriginAllowed('https://app.example.com:444', 'hub', policy))
  t.notOk(isOriginAllowed('http://app.example.com', 'hub', policy))
  t.notOk(isOriginAllowed('https://hub', 'hub', policy), 'with a list, the own host is not implied')
  t.notOk(isOriginAllowed('null', 'hub', { allowedOrigins: ['null'], requireOrigin: false }), '"null" never matches')
})

t.test('grants: exact names and prefix* patterns', async (t) => {
  t.ok(isGranted(['news'], 'news'))
  t.notOk(isGranted(['news'], 'news2'))
  t.ok(isGranted(['room:*'], 'room:1'))
  t.ok(isGranted(['room:*'], 'room:a:b'))
  t.notOk(isGranted(['room:*'], 'room'))
  t.ok(isGranted(['*'], 'anything'))
  t.notOk(isGranted([], 'news'))
})

t.test('grant grammar: * only as a whole last segment after . or :', async (t) => {
  t.notOk(isGranted(['room:1*'], 'room:10'), 'room:1* is no pattern: it does not grant room:10')
  t.notOk(isGranted(['room:1*'], 'room:1'), 'nor room:1')
  t.notOk(isGranted(['a:*'], 'a:'), 'a:* does not grant a: itself')
  t.ok(isGranted(['a:*'], 'a:b'))
  t.ok(isGranted(['chat.*'], 'chat.lobby'))
  t.notOk(isGranted(['chat.*'], 'chatroom'))
  t.notOk(isGranted(['room-*'], 'room-1'), '- is not a separator')
  t.notOk(isGranted(['room*'], 'room'))
  t.notOk(isGranted([':*'], ':x'), 'a separator alone is no prefix')
  t.notOk(isGranted(['a:*:*'], 'a:b:c'), 'one * only, at the end')
  for (const pattern of ['*', 'news', 'room:*', 'chat.*', 'a.b:*']) t.ok(isValidPattern(pattern), pattern)
  for (const pattern of ['room:1*', 'room*', '**', ':*', 'a:*:*', '*:a', 'a b', '', 'x'.repeat(129)]) t.notOk(isValidPattern(pattern), pattern)
})

t.test('the token bucket allows a burst, then the sustained rate', async (t) => {
  const bucket = new TokenBucket(10, 5, 0)
  t.same(Array.from({ length: 6 }, () => bucket.take(0)), [true, true, true, true, true, false])
  t.notOk(bucket.take(50), 'half a token after 50 ms')
  t.ok(bucket.take(100), 'one token after 100 ms')
  t.ok(bucket.take(10_000) && bucket.take(10_000) && bucket.take(10_000) && bucket.take(10_000) && bucket.take(10_000))
  t.notOk(bucket.take(10_000), 'never more than the burst after a long pause')
})

t.test('loopback addresses', async (t) => {
  for (const address of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) t.ok(isLoopback(address), address)
  for (const address of ['10.0.0.1', '::ffff:10.0.0.1', '203.0.113.5', '::', undefined, '127.evil.example', '127.0.0.1.nip.io', '']) {
    t.notOk(isLoopback(address), String(address))
  }
  t.ok(isLoopback('0:0:0:0:0:0:0:1'), 'IPv6 written out in full')
  for (const host of ['localhost', 'localhost:3000', '127.0.0.1:80', '[::1]:3000', '[::1]']) t.ok(isLoopbackHost(host), host)
  for (const host of ['attacker.example', 'localhost.example:3000', '[::2]:80', undefined, '']) t.notOk(isLoopbackHost(host), String(host))
})

t.test('credentials in a query string are redacted, however they are spelled', async (t) => {
  t.equal(redactSecrets('/ws'), '/ws')
  t.equal(redactSecrets('/ws?channels=a,b'), '/ws?channels=a,b')
  t.equal(redactSecrets('/ws?channels=a&token=abc.def'), '/ws?channels=a&token=[redacted]')
  t.equal(redactSecrets('/ws?%74oken=abc'), '/ws?%74oken=[redacted]')
  t.equal(redactSecrets('/ws?%zz=1&token=abc'), '/ws?%zz=1&token=[redacted]', 'a name that does not decode')
  t.equal(redactSecrets('/publish?KEY=k&Access_Token=t'), '/publish?KEY=[redacted]&Access_Token=[redacted]')
  t.equal(redactSecrets('Route GET://ws?token=abc.def not found'), 'Route GET://ws?token=[redacted] not found', 'in a message')
  t.equal(redactSecrets('a=b and c'), 'a=b and c')
})
