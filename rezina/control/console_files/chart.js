// The throughput chart: the stage's items/s out over the last CHART_SECONDS, on a canvas.

export const CHART_SECONDS = 90;   // the span of a throughput chart, at most
const MIN_SPAN = 20;               // ... and at least

export function drawChart(canvas, samples, now) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 320, height = canvas.clientHeight || 110;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const g = canvas.getContext('2d');
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);

  const style = getComputedStyle(canvas);
  const left = 40, right = width - 6, top = 8, bottom = height - 16;
  const peak = niceCeiling(Math.max(1, ...samples.map(([, rate]) => rate)));
  // the span grows with the history, up to CHART_SECONDS, so a new chart is readable
  const history = samples.length ? now - samples[0][0] : 0;
  const span = Math.min(CHART_SECONDS, Math.max(MIN_SPAN, history));
  const x = (at) => left + (right - left) * (1 - (now - at) / span);
  const y = (rate) => bottom - (bottom - top) * rate / peak;

  g.font = '10px sans-serif';
  g.fillStyle = g.strokeStyle = style.borderColor;
  g.lineWidth = 1;
  g.textAlign = 'right';
  [0, peak / 2, peak].forEach((rate) => {
    g.beginPath();
    g.moveTo(left, Math.round(y(rate)) + 0.5);
    g.lineTo(right, Math.round(y(rate)) + 0.5);
    g.stroke();
    g.fillText(String(rate), left - 4, y(rate) + 3);
  });
  g.textAlign = 'left';
  g.fillText(`items/s out, last ${Math.round(span)} s`, left, height - 3);
  if (samples.length < 2) return;

  g.beginPath();
  samples.forEach(([at, rate], i) => (i ? g.lineTo(x(at), y(rate)) : g.moveTo(x(at), y(rate))));
  g.strokeStyle = style.color;
  g.lineWidth = 1.5;
  g.stroke();
  g.lineTo(x(samples[samples.length - 1][0]), bottom);
  g.lineTo(x(samples[0][0]), bottom);
  g.closePath();
  g.globalAlpha = 0.15;
  g.fillStyle = style.color;
  g.fill();
  g.globalAlpha = 1;
}

function niceCeiling(value) {
  const step = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * step).find((nice) => nice >= value);
}
