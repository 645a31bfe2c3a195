/**
 * The live event feed of the console: Server-Sent Events fed by the same polling of
 * ListEvents that `certfleet events --follow` does (the OperatorService has no server
 * stream). One poll loop per open page; the console has one user, so that is cheap.
 */
import type { ServerResponse } from 'node:http';
import type { Clock } from '../../shared/clock/index.js';
import { ErrorCode, isCertfleetError, toCertfleetError } from '../../shared/errors/index.js';
import type { pb } from '../../shared/grpc/index.js';
import { newEvents } from '../render.js';

/** The one call the feed makes. */
export interface FeedClient {
  listEvents(req: pb.ListEventsRequest): Promise<pb.ListEventsResponse__Output>;
}

/**
 * Streams events to `res` until `signal` aborts: first the most recent ones (as
 * `events` shows them), then each new one as it appears, one `data:` JSON object per
 * event (the FleetEvent as `events --json` prints it). A failed poll is sent as an
 * `event: problem` with the message (the page shows it) and polling goes on; a comment
 * line after every poll finds a closed page.
 */
export async function streamEvents(
  res: ServerResponse,
  opts: { client: FeedClient; cert: string; intervalMs: number; clock: Clock; signal: AbortSignal },
): Promise<void> {
  res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', 'X-Accel-Buffering': 'no' });
  // The browser reconnects after this long if the stream breaks.
  res.write(`retry: ${opts.intervalMs}\n\n`);
  let seen: ReadonlySet<string> = new Set();
  let failing = false;
  while (!opts.signal.aborted && !res.writableEnded) {
    try {
      const resp = await opts.client.listEvents({ limit: 0, cert: opts.cert });
      const next = newEvents(seen, resp.events);
      seen = next.seen;
      for (const e of next.fresh) res.write(`data: ${JSON.stringify(e)}\n\n`);
      if (failing) res.write(`event: problem\ndata: ${JSON.stringify({ message: '' })}\n\n`);
      failing = false;
      res.write(': polled\n\n');
    } catch (err) {
      const cf = toCertfleetError(err);
      failing = true;
      res.write(`event: problem\ndata: ${JSON.stringify({ code: cf.code, message: cf.message })}\n\n`);
      // Only an unreachable controller is worth waiting out; a refusal will not change.
      if (!isCertfleetError(err, ErrorCode.ControllerUnavailable)) break;
    }
    try {
      await opts.clock.sleep(opts.intervalMs, opts.signal);
    } catch {
      break; // aborted: the page went away or the console stops
    }
  }
  if (!res.writableEnded) res.end();
}
