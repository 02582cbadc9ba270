// The official MCP TypeScript SDK client (@modelcontextprotocol/client, pinned in
// package-lock.json) against one of pyexec's MCP transports. TestMCPTypeScriptClient
// (cmd/pyexec/app/mcp_ts_test.go) runs it; by hand:
//
//   node client.mjs --socket /var/run/pyexec/pyexec.sock            # Streamable HTTP at /mcp
//   node client.mjs --stdio pyexec --arg mcp --arg --socket --arg S  # `pyexec mcp` on stdio
//
// Options:
//   --socket PATH          Streamable HTTP at http://pyexec/mcp over the Unix socket PATH
//   --stdio CMD            stdio: start CMD with the --arg values (repeatable) as its arguments
//   --env K=V              (stdio, repeatable) more environment for CMD
//   --suite basic|owner|all  which checks: basic (the default), the owner checks, or both
//   --era modern|legacy    the protocol: modern (the default) negotiates 2026-07-28 with
//                          server/discover and fails to connect on anything older; legacy is
//                          the 2025 initialize handshake
//   --owner-checks         the same as --suite all
//   --timeout-ms N         the time of each MCP request (default 20000)
//   --owner KEY            the owner of the basic checks' client (HTTP: the Pyexec-Owner header;
//                          stdio: --owner); without it an HTTP client is anonymous and is listed
//                          no sessions or files
//
// It prints one JSON report on stdout: {"transport", "checks": [{"name", "ok", "detail"}]},
// and exits 0 when every check passed, 1 when one failed, 2 on bad arguments.
import http from 'node:http';
import { Readable } from 'node:stream';

import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';

// ---- arguments

function parseArgs(argv) {
    const o = { args: [], env: {}, suite: 'basic', timeoutMs: 20000, era: 'modern' };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const value = () => {
            if (i + 1 >= argv.length) usage(`${a} needs a value`);
            return argv[++i];
        };
        switch (a) {
            case '--socket': o.socket = value(); break;
            case '--stdio': o.stdio = value(); break;
            case '--arg': o.args.push(value()); break;
            case '--env': {
                const kv = value();
                const eq = kv.indexOf('=');
                if (eq <= 0) usage(`--env ${kv}: want K=V`);
                o.env[kv.slice(0, eq)] = kv.slice(eq + 1);
                break;
            }
            case '--suite': o.suite = value(); break;
            case '--owner-checks': o.suite = 'all'; break;
            case '--timeout-ms': o.timeoutMs = Number(value()); break;
            case '--era': o.era = value(); break;
            case '--owner': o.owner = value(); break;
            default: usage(`unknown argument ${a}`);
        }
    }
    if (!o.socket === !o.stdio) usage('give one of --socket and --stdio');
    if (!['basic', 'owner', 'all'].includes(o.suite)) usage(`--suite ${o.suite}: want basic, owner or all`);
    if (!['modern', 'legacy'].includes(o.era)) usage(`--era ${o.era}: want modern or legacy`);
    if (!(o.timeoutMs > 0)) usage('--timeout-ms: want a positive number');
    return o;
}

function usage(msg) {
    process.stderr.write(`client.mjs: ${msg}\n`);
    process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
const transportName = opts.socket ? 'http' : 'stdio';
const requestOptions = { timeout: opts.timeoutMs };

// ---- Streamable HTTP over a Unix socket: a WHATWG fetch made of node's http.request

// unixSocketFetch returns a fetch that sends every request to the HTTP server on socketPath,
// whatever the URL's host (the URL gives the path and query only).
function unixSocketFetch(socketPath) {
    return (input, init = {}) =>
        new Promise((resolve, reject) => {
            const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
            const signal = init.signal;
            if (signal?.aborted) return reject(signal.reason ?? new Error('aborted'));
            const headers = Object.fromEntries(new Headers(init.headers));
            const req = http.request(
                { socketPath, method: init.method ?? 'GET', path: url.pathname + url.search, headers },
                res => {
                    const h = new Headers();
                    for (const [k, v] of Object.entries(res.headers)) {
                        for (const one of [].concat(v ?? [])) h.append(k, one);
                    }
                    const empty = [101, 204, 205, 304].includes(res.statusCode) || init.method === 'HEAD';
                    resolve(new Response(empty ? null : Readable.toWeb(res), {
                        status: res.statusCode,
                        statusText: res.statusMessage,
                        headers: h,
                    }));
                },
            );
            req.on('error', reject);
            if (signal) {
                const abort = () => req.destroy(signal.reason ?? new Error('aborted'));
                signal.addEventListener('abort', abort, { once: true });
                req.on('close', () => signal.removeEventListener('abort', abort));
            }
            const body = init.body;
            if (body == null) req.end();
            else if (typeof body === 'string' || body instanceof Uint8Array) req.end(body);
            else if (body instanceof ArrayBuffer) req.end(Buffer.from(body));
            else {
                req.destroy();
                reject(new TypeError(`unixSocketFetch: unsupported body ${Object.prototype.toString.call(body)}`));
            }
        });
}

// ---- clients

// connect returns a connected client and a function that says what the server printed to
// stderr (stdio) for failure details. owner is the owner key of the client, or undefined.
async function connect(owner) {
    const client = new Client({ name: 'pyexec-ts-test', version: '1.0.0' }, {
        // modern: the SDK probes with server/discover and takes 2026-07-28 when the server has it;
        // legacy: the 2025 initialize handshake.
        versionNegotiation: { mode: opts.era === 'modern' ? 'auto' : 'legacy' },
    });
    let stderr = '';
    let transport;
    if (opts.socket) {
        transport = new StreamableHTTPClientTransport(new URL('http://pyexec/mcp'), {
            fetch: unixSocketFetch(opts.socket),
            requestInit: owner === undefined ? undefined : { headers: { 'Pyexec-Owner': owner } },
        });
    } else {
        transport = new StdioClientTransport({
            command: opts.stdio,
            args: owner === undefined ? opts.args : [...opts.args, '--owner', owner],
            env: opts.env,
            stderr: 'pipe',
        });
        transport.stderr?.on('data', d => {
            if (stderr.length < 4096) stderr += d;
        });
    }
    try {
        await client.connect(transport, requestOptions);
    } catch (err) {
        throw new Error(`${describe(err)}${stderr ? `; server's stderr: ${stderr.trim()}` : ''}`);
    }
    const era = client.getProtocolEra();
    if (era !== opts.era) {
        await client.close().catch(() => {});
        throw new Error(`connected in the ${era} era (protocol ${client.getNegotiatedProtocolVersion()}), want ${opts.era}`);
    }
    return { client, stderr: () => stderr };
}

// ---- checks

const checks = [];

// check runs fn and records it as one check: ok when fn returns, not ok when it throws. fn's
// return value, if any, is the check's detail.
async function check(name, fn) {
    try {
        const detail = await fn();
        checks.push({ name, ok: true, detail: detail ?? '' });
    } catch (err) {
        checks.push({ name, ok: false, detail: describe(err) });
    }
}

function fail(msg) {
    throw new Error(msg);
}

function describe(err) {
    if (!(err instanceof Error)) return String(err);
    let s = (err.message || String(err)).replace(/\s+/g, ' ');
    if (err.code !== undefined && !s.includes(String(err.code))) s += ` (code ${err.code})`;
    if (err.data !== undefined) s += ` data: ${clip(JSON.stringify(err.data), 400)}`;
    return s;
}

function clip(s, n = 300) {
    s = String(s);
    return s.length > n ? `${s.slice(0, n)}...(${s.length} chars)` : s;
}

function texts(result) {
    return (result.content ?? []).filter(c => c.type === 'text').map(c => c.text).join('\n');
}

function callTool(client, name, args) {
    return client.callTool({ name, arguments: args }, requestOptions);
}

// runPython calls run_python and says what came back, for details.
async function runPython(client, args) {
    const res = await callTool(client, 'run_python', args);
    return { res, text: texts(res), summary: `isError=${res.isError === true} text=${JSON.stringify(clip(texts(res)))}` };
}

async function basicChecks() {
    let c;
    await check('connect', async () => {
        c = await connect(opts.owner);
        const v = c.client.getServerVersion();
        return `server ${v?.name} ${v?.version}, protocol ${c.client.getNegotiatedProtocolVersion()} (${c.client.getProtocolEra()} era)`;
    });
    if (!c) return;
    const client = c.client;
    try {
        await check('listTools', async () => {
            const { tools } = await client.listTools(undefined, requestOptions);
            const names = tools.map(t => t.name);
            const missing = ['run_python', 'create_session', 'close_session', 'list_sessions'].filter(n => !names.includes(n));
            if (missing.length) fail(`missing ${missing.join(', ')}; tools: ${names.join(', ')}`);
            return names.join(', ');
        });

        await check('run_python print', async () => {
            const { res, summary } = await runPython(client, { code: 'print(6*7)' });
            const first = res.content?.[0];
            if (res.isError) fail(`isError: ${summary}`);
            if (first?.type !== 'text' || !first.text.includes('42')) fail(`first content is not a text with 42: ${clip(JSON.stringify(first))}`);
            return summary;
        });

        await check('run_python figure', async () => {
            const code = "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; plt.plot([1,2]); plt.show()";
            const { res, summary } = await runPython(client, { code });
            if (res.isError) fail(`isError: ${summary}`);
            const images = (res.content ?? []).filter(x => x.type === 'image');
            if (images.length === 0) fail(`no image content: types ${(res.content ?? []).map(x => x.type).join(', ')}; ${summary}`);
            const img = images[0];
            if (img.mimeType !== 'image/png') fail(`mimeType ${img.mimeType}`);
            const png = Buffer.from(img.data, 'base64');
            const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
            if (!png.subarray(0, 8).equals(sig)) fail(`image data does not start with the PNG signature: ${png.subarray(0, 8).toString('hex')}`);
            return `${images.length} image(s), the first ${png.length} bytes`;
        });

        await check('run_python error', async () => {
            const { res, text, summary } = await runPython(client, { code: '1/0' });
            if (res.isError !== true) fail(`isError is not true: ${summary}`);
            if (!text.includes('ZeroDivisionError')) fail(`no ZeroDivisionError in the text: ${summary}`);
            const sc = res.structuredContent;
            if (sc !== undefined && sc !== null && sc.exit_code === 0) fail(`structuredContent claims success: exit_code 0 (${clip(JSON.stringify(sc))})`);
            return sc === undefined ? summary : `${summary}; structuredContent.exit_code=${sc?.exit_code}`;
        });

        let id;
        await check('create_session', async () => {
            const res = await callTool(client, 'create_session', {});
            id = res.structuredContent?.session_id;
            if (res.isError || typeof id !== 'string' || id === '') {
                id = undefined;
                fail(`no session_id: isError=${res.isError === true} ${clip(JSON.stringify(res))}`);
            }
            return id;
        });
        const inSession = (name, fn) => check(name, () => (id === undefined ? fail('no session') : fn()));

        await inSession('session state', async () => {
            const first = await runPython(client, { session_id: id, code: 'x = 41' });
            if (first.res.isError) fail(`x = 41: ${first.summary}`);
            const { res, summary } = await runPython(client, { session_id: id, code: 'print(x+1)' });
            if (res.isError || !texts(res).includes('42')) fail(`print(x+1): ${summary}`);
            return summary;
        });

        const content = 'a,b\n1,2\n';
        const uri = () => `pyexec://sessions/${id}/files/out.csv`;
        await inSession('session writes out.csv', async () => {
            const { res, summary } = await runPython(client, { session_id: id, code: `open('out.csv', 'w').write(${JSON.stringify(content)})` });
            if (res.isError) fail(summary);
            return summary;
        });

        await inSession('listResources', async () => {
            const { resources } = await client.listResources(undefined, requestOptions);
            const uris = resources.map(r => r.uri);
            if (!uris.includes(uri())) fail(`${uri()} is not listed: ${clip(uris.join(', '))}`);
            return `${resources.length} resource(s)`;
        });

        await inSession('readResource', async () => {
            const { contents } = await client.readResource({ uri: uri() }, requestOptions);
            const text = contents?.[0]?.text;
            if (text !== content) fail(`contents ${clip(JSON.stringify(contents))}, want the text ${JSON.stringify(content)}`);
            return `${contents.length} content(s), mimeType ${contents[0].mimeType}`;
        });

        await inSession('close_session', async () => {
            const res = await callTool(client, 'close_session', { session_id: id });
            if (res.isError) fail(`isError: ${clip(texts(res))}`);
            return clip(JSON.stringify(res.structuredContent ?? texts(res)));
        });

        await inSession('run_python in a closed session', async () => {
            const { res, summary } = await runPython(client, { session_id: id, code: 'print(x)' });
            if (res.isError !== true) fail(`isError is not true: ${summary}`);
            return summary;
        });
    } finally {
        await client.close().catch(() => {});
    }
}

// ownerChecks: two clients with different owner keys (stdio: `--owner A` / `--owner B` after
// the command's arguments; HTTP: the header Pyexec-Owner on every request). A's sessions and
// their files are A's alone.
async function ownerChecks() {
    let a, b;
    await check('owner: connect A', async () => {
        a = await connect('A');
    });
    await check('owner: connect B', async () => {
        b = await connect('B');
    });
    try {
        let id;
        const file = 'secret.txt';
        const content = 'only for A\n';
        const uri = () => `pyexec://sessions/${id}/files/${file}`;
        const need = (name, fn) => check(name, () => (a && b && id !== undefined ? fn() : fail('no clients A and B, or no session of A')));

        if (a) {
            await check('owner: A creates a session and writes a file', async () => {
                const res = await callTool(a.client, 'create_session', {});
                const sid = res.structuredContent?.session_id;
                if (res.isError || typeof sid !== 'string' || sid === '') fail(`create_session: ${clip(JSON.stringify(res))}`);
                const w = await runPython(a.client, { session_id: sid, code: `y = 7\nopen(${JSON.stringify(file)}, 'w').write(${JSON.stringify(content)})` });
                if (w.res.isError) fail(`writing ${file}: ${w.summary}`);
                id = sid;
                return id;
            });
        }

        await need("owner: A reads its own file", async () => {
            const { contents } = await a.client.readResource({ uri: uri() }, requestOptions);
            if (contents?.[0]?.text !== content) fail(`contents ${clip(JSON.stringify(contents))}`);
        });

        await need("owner: B's list_sessions does not show A's session", async () => {
            const res = await callTool(b.client, 'list_sessions', {});
            const all = JSON.stringify(res);
            if (res.isError) fail(`isError: ${clip(texts(res))}`);
            if (all.includes(id)) fail(`B sees ${id}: ${clip(all)}`);
            return clip(JSON.stringify(res.structuredContent ?? texts(res)));
        });

        await need("owner: B's listResources does not show A's files", async () => {
            const { resources } = await b.client.listResources(undefined, requestOptions);
            const seen = resources.filter(r => r.uri.includes(id));
            if (seen.length) fail(`B sees ${seen.map(r => r.uri).join(', ')}`);
            return `${resources.length} resource(s)`;
        });

        await need("owner: B's run_python in A's session is an error", async () => {
            const { res, summary } = await runPython(b.client, { session_id: id, code: 'print(y * 6)' });
            if (res.isError !== true) fail(`isError is not true: ${summary}`);
            return summary;
        });

        await need("owner: B's readResource of A's file fails", async () => {
            let contents;
            try {
                ({ contents } = await b.client.readResource({ uri: uri() }, requestOptions));
            } catch (err) {
                return `failed: ${describe(err)}`;
            }
            fail(`B read ${clip(JSON.stringify(contents))}`);
        });

        await need("owner: B's close_session of A's session is an error", async () => {
            const res = await callTool(b.client, 'close_session', { session_id: id });
            if (res.isError !== true) fail(`isError is not true: ${clip(JSON.stringify(res))}`);
            return clip(texts(res));
        });

        await need("owner: A's session still works", async () => {
            const { res, summary } = await runPython(a.client, { session_id: id, code: 'print(y * 6)' });
            if (res.isError || !texts(res).includes('42')) fail(summary);
            return summary;
        });

        if (a && id !== undefined) await callTool(a.client, 'close_session', { session_id: id }).catch(() => {});
    } finally {
        await a?.client.close().catch(() => {});
        await b?.client.close().catch(() => {});
    }
}

if (opts.suite !== 'owner') await basicChecks();
if (opts.suite !== 'basic') await ownerChecks();

process.stdout.write(JSON.stringify({ transport: transportName, checks }, null, 1) + '\n');
process.exitCode = checks.every(c => c.ok) ? 0 : 1;
