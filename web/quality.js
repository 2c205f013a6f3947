// Whether the viewer should ask for half-size frames (`?size=small`): a parent
// on 3G gets an old, stuttering picture at full size and a timely one at half.
// The page feeds every frame's arrival here and switches sockets when told to;
// nothing in this file touches the page, so it is tested with made-up timings.

/**
 * Late: over the last LATE_WINDOW_MS (and never fewer than MIN_SAMPLES
 * frames), half of the frames were taken more than LATE_AGE_MS before they
 * arrived. A median, over seconds rather than frames, so that a few seconds'
 * hiccup (a lift, a tunnel) is not a weak link, at any frame rate.
 */
export const LATE_AGE_MS = 1500;
export const LATE_WINDOW_MS = 5000;
export const MIN_SAMPLES = 3;
/**
 * Late or starved (below) on every frame for LATE_FOR_MS before switching:
 * a phone that lost its signal for two or three seconds catches up at once,
 * and a socket reopened for nothing costs a picture's worth of waiting.
 */
export const LATE_FOR_MS = 2000;
/**
 * Starved: fewer than half the frames the stream makes arrived over
 * LATE_WINDOW_MS. On a thin link the server skips frames to keep the newest
 * one going, so a slow link shows as a low rate before it shows as old frames.
 * Judged only where the page knows the stream's rate (the server's own camera).
 */
export const SLOW_RATE_FRACTION = 0.5;
/**
 * Recovered: small frames arriving within TIMELY_AGE_MS (by median) and at a
 * fair rate for RECOVER_MS without a break. Far below LATE_AGE_MS and far
 * longer than the late window, so that a link at the edge does not flap.
 */
export const TIMELY_AGE_MS = 500;
export const RECOVER_MS = 30_000;
/**
 * Back to small within RELAPSE_MS of returning to full: full size was too
 * much after all, so the next try waits twice as long (up to
 * RECOVER_MAX_FACTOR times RECOVER_MS).
 */
export const RELAPSE_MS = 60_000;
export const RECOVER_MAX_FACTOR = 8;

/** The median of a non-empty list of numbers. */
function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * Decides the frame size from frame arrivals. `frame()` returns 'small' or
 * 'full' when the page should switch to that size, else null. Times are in
 * ms; `ts` is a frame's capture time by the server's clock, `arrivedAt` its
 * arrival by the same clock (the page adds its clock offset), so an age is
 * `arrivedAt - ts`. Options override the constants above (`intervalMs`: the
 * stream's frame interval, or null where unknown).
 */
export class QualityGovernor {
  constructor(options = {}) {
    this.lateAgeMs = options.lateAgeMs ?? LATE_AGE_MS;
    this.lateWindowMs = options.lateWindowMs ?? LATE_WINDOW_MS;
    this.lateForMs = options.lateForMs ?? LATE_FOR_MS;
    this.timelyAgeMs = options.timelyAgeMs ?? TIMELY_AGE_MS;
    this.recoverBaseMs = options.recoverMs ?? RECOVER_MS;
    this.relapseMs = options.relapseMs ?? RELAPSE_MS;
    this.intervalMs = options.intervalMs ?? null;
    /** 'full' or 'small': what the page is asking for. */
    this.size = 'full';
    /** The user asked for full size: no more switching on this page. */
    this.pinned = false;
    this.recoverMs = this.recoverBaseMs;
    this.fullSince = null;
    this.restart();
  }

  /**
   * Forgets the frames seen: a new socket (its first frame is whatever the
   * server held), another stream, or a stream that stopped and started.
   */
  restart() {
    this.samples = [];
    this.watchingSince = null;
    this.badSince = null;
    this.goodSince = null;
  }

  /** The stream's frame interval, where the page knows it (null: judge ages only). */
  setInterval(ms) {
    this.intervalMs = Number.isFinite(ms) && ms > 0 ? ms : null;
  }

  /** The user tapped for full size: full from now on, whatever the link does. */
  pinFull() {
    this.pinned = true;
    this.size = 'full';
    this.restart();
  }

  /** One frame arrived; its capture time `ts` is null when the page does not know it. */
  frame(arrivedAt, ts) {
    const age = Number.isFinite(ts) ? Math.max(0, arrivedAt - ts) : null;
    this.samples.push({ at: arrivedAt, age });
    if (this.watchingSince === null) this.watchingSince = arrivedAt;
    const from = arrivedAt - this.lateWindowMs;
    while (this.samples.length > MIN_SAMPLES && this.samples[0].at < from) this.samples.shift();
    if (this.pinned) return null;

    const watched = arrivedAt - this.watchingSince >= this.lateWindowMs;
    const ages = this.samples.map((s) => s.age).filter((a) => a !== null);
    const typical = ages.length >= MIN_SAMPLES ? median(ages) : null;
    const recent = this.samples.filter((s) => s.at >= from).length;
    const slow = watched && this.intervalMs !== null
      && recent < (this.lateWindowMs / this.intervalMs) * SLOW_RATE_FRACTION;

    if (this.size === 'full') {
      const late = watched && typical !== null && typical > this.lateAgeMs;
      if (!late && !slow) {
        this.badSince = null;
        return null;
      }
      if (this.badSince === null) this.badSince = arrivedAt;
      if (arrivedAt - this.badSince < this.lateForMs) return null;
      // Back to small soon after a try at full size: wait longer next time.
      const relapsed = this.fullSince !== null && arrivedAt - this.fullSince < this.relapseMs;
      this.recoverMs = relapsed
        ? Math.min(this.recoverMs * 2, this.recoverBaseMs * RECOVER_MAX_FACTOR)
        : this.recoverBaseMs;
      return this.switchTo('small', arrivedAt);
    }
    const good = typical !== null && typical <= this.timelyAgeMs && !slow;
    if (!good) {
      this.goodSince = null;
      return null;
    }
    if (this.goodSince === null) this.goodSince = arrivedAt;
    return arrivedAt - this.goodSince >= this.recoverMs ? this.switchTo('full', arrivedAt) : null;
  }

  switchTo(size, now) {
    this.size = size;
    this.fullSince = size === 'full' ? now : null;
    this.restart();
    return size;
  }
}
