/**
 * Reads a tcpdump capture (pcap, Ethernet) and tells, for every TCP connection that started inside the
 * capture, whether each direction is nothing but TLS records from its first byte (after PostgreSQL's
 * SSLRequest / GSSENCRequest negotiation, which is how libpq starts TLS). Pure: bytes in, verdicts out.
 * Used by test/net/cluster-tls.test.ts to prove that etcd, Patroni REST and PostgreSQL carry only TLS.
 */

export interface StreamVerdict {
  /** "10.0.0.1:40000>10.0.0.2:2381" */
  key: string;
  serverPort: number;
  clientToServer: DirectionVerdict;
  serverToClient: DirectionVerdict;
}

export interface DirectionVerdict {
  bytes: number;
  tlsRecords: number;
  /** Why this direction is not pure TLS (plaintext found), or undefined when it is. */
  problem?: string;
}

interface Segment {
  seq: number;
  data: Buffer;
}

interface Flow {
  src: string;
  sport: number;
  dst: string;
  dport: number;
  isn?: number;
  segments: Segment[];
}

const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
const GSSENC_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]);

/** Parses the pcap into TCP flows (one per direction), keyed "src:sport>dst:dport". */
export function tcpFlows(pcap: Buffer): Map<string, Flow> {
  const magic = pcap.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && pcap.readUInt32BE(0) !== 0xa1b2c3d4 && pcap.readUInt32BE(0) !== 0xa1b23c4d) throw new Error('not a pcap file');
  const u32 = (o: number) => (le ? pcap.readUInt32LE(o) : pcap.readUInt32BE(o));
  const linktype = u32(20);
  if (linktype !== 1) throw new Error(`pcap link type ${linktype}: capture on an Ethernet interface (e.g. the bridge)`);
  const flows = new Map<string, Flow>();
  for (let off = 24; off + 16 <= pcap.length; ) {
    const incl = u32(off + 8);
    const frame = pcap.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    if (frame.length < 14) continue;
    const ethertype = frame.readUInt16BE(12);
    let ip = frame.subarray(14);
    let src: string;
    let dst: string;
    let tcp: Buffer;
    if (ethertype === 0x0800) {
      const ihl = (ip[0] & 0x0f) * 4;
      if (ip[9] !== 6) continue;
      ip = ip.subarray(0, ip.readUInt16BE(2));
      src = [...ip.subarray(12, 16)].join('.');
      dst = [...ip.subarray(16, 20)].join('.');
      tcp = ip.subarray(ihl);
    } else if (ethertype === 0x86dd) {
      if (ip[6] !== 6) continue;
      ip = ip.subarray(0, 40 + ip.readUInt16BE(4));
      const v6 = (b: Buffer) => [...Array(8).keys()].map((i) => b.readUInt16BE(i * 2).toString(16)).join(':');
      src = v6(ip.subarray(8, 24));
      dst = v6(ip.subarray(24, 40));
      tcp = ip.subarray(40);
    } else continue;
    const sport = tcp.readUInt16BE(0);
    const dport = tcp.readUInt16BE(2);
    const seq = tcp.readUInt32BE(4);
    const flags = tcp[13];
    const data = tcp.subarray((tcp[12] >> 4) * 4);
    const key = `${src}:${sport}>${dst}:${dport}`;
    let f = flows.get(key);
    if (!f) flows.set(key, (f = { src, sport, dst, dport, segments: [] }));
    if (flags & 0x02) f.isn = (seq + 1) >>> 0; // SYN
    if (data.length) f.segments.push({ seq, data: Buffer.from(data) });
  }
  return flows;
}

/** The bytes of a flow from its first byte, as far as they are contiguous (retransmissions dropped). */
function streamBytes(f: Flow): Buffer {
  if (f.isn === undefined) return Buffer.alloc(0);
  const rel = (s: number) => (s - f.isn! + 2 ** 32) % 2 ** 32;
  const segs = f.segments.map((s) => ({ at: rel(s.seq), data: s.data })).sort((a, b) => a.at - b.at);
  const parts: Buffer[] = [];
  let next = 0;
  for (const s of segs) {
    if (s.at > next) break; // a gap: stop at what is certain
    const end = s.at + s.data.length;
    if (end <= next) continue;
    parts.push(s.data.subarray(next - s.at));
    next = end;
  }
  return Buffer.concat(parts);
}

/** Walks TLS records from the start of `b` (after PostgreSQL's negotiation when `postgres`). */
export function tlsVerdict(b: Buffer, side: 'client' | 'server', postgres: boolean): DirectionVerdict {
  let off = 0;
  if (postgres) {
    // libpq: optional GSSENCRequest (answered 'N'), then SSLRequest (answered 'S'), then the TLS handshake.
    if (side === 'client') {
      while (off + 8 <= b.length && (b.subarray(off, off + 8).equals(GSSENC_REQUEST) || b.subarray(off, off + 8).equals(SSL_REQUEST))) {
        const ssl = b.subarray(off, off + 8).equals(SSL_REQUEST);
        off += 8;
        if (ssl) break;
      }
      if (off === 0 && b.length) return { bytes: b.length, tlsRecords: 0, problem: `no SSLRequest: starts ${b.subarray(0, 16).toString('hex')}` };
    } else {
      while (off < b.length && b[off] === 0x4e) off++; // 'N' to a GSSENCRequest
      if (off < b.length && b[off] === 0x53) off++; // 'S': TLS follows
      else if (b.length) return { bytes: b.length, tlsRecords: 0, problem: `server did not accept TLS: starts ${b.subarray(off, off + 16).toString('hex')}` };
    }
  }
  let records = 0;
  while (off + 5 <= b.length) {
    const type = b[off];
    const major = b[off + 1];
    const len = b.readUInt16BE(off + 3);
    if (type < 20 || type > 23 || major !== 3 || len > 16384 + 2048) {
      return { bytes: b.length, tlsRecords: records, problem: `not a TLS record at byte ${off}: ${b.subarray(off, off + 24).toString('hex')} (${JSON.stringify(b.subarray(off, off + 24).toString('latin1'))})` };
    }
    off += 5 + len;
    records++;
  }
  return { bytes: b.length, tlsRecords: records };
}

/** Verdicts of every connection to one of `ports` whose SYN is in the capture. */
export function tlsStreams(pcap: Buffer, ports: number[], postgresPorts: number[]): { streams: StreamVerdict[]; notFromStart: number } {
  const flows = tcpFlows(pcap);
  const streams: StreamVerdict[] = [];
  let notFromStart = 0;
  for (const [key, f] of flows) {
    if (!ports.includes(f.dport)) continue;
    const back = flows.get(`${f.dst}:${f.dport}>${f.src}:${f.sport}`);
    if (f.isn === undefined) {
      notFromStart++;
      continue;
    }
    const pg = postgresPorts.includes(f.dport);
    streams.push({
      key,
      serverPort: f.dport,
      clientToServer: tlsVerdict(streamBytes(f), 'client', pg),
      serverToClient: back ? tlsVerdict(streamBytes(back), 'server', pg) : { bytes: 0, tlsRecords: 0 },
    });
  }
  return { streams, notFromStart };
}
