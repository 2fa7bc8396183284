"""The stylesheet and script inlined into every HTML Gantt page (kept here so html.py stays about layout).

The script never fetches anything. It reads the slice details from the page's JSON block, and zooms and pans
by rewriting one ``transform`` on the group that holds every slice, flow and occupancy curve (all drawn in
microseconds along x), so a view change costs the same for ten slices or ten thousand. The time axis is
redrawn for the visible range. Loading the page with ``#selftest`` runs the controls once and records the
outcome in ``body[data-selftest]`` for headless-browser tests.
"""

STYLE = """
body { font: 13px system-ui, sans-serif; margin: 12px; color: #222; background: #fff; }
h1 { font-size: 17px; margin: 0 0 4px 0; }
.meta { color: #555; margin-bottom: 8px; }
.controls { margin: 6px 0; display: flex; gap: 6px; align-items: center; }
.controls button { font: inherit; padding: 2px 10px; cursor: pointer; }
#chart { border: 1px solid #ccc; overflow: hidden; cursor: grab; user-select: none; }
#chart.dragging { cursor: grabbing; }
svg text { font: 11px system-ui, sans-serif; fill: #222; }
.group-title { font-weight: bold; fill: #444; }
.lane-bg { fill: #f6f6f6; }
.lane-bg.odd { fill: #ececec; }
.slice { stroke: #0003; stroke-width: 0.5; vector-effect: non-scaling-stroke; }
.slice:hover { stroke: #000; stroke-width: 1.5; vector-effect: non-scaling-stroke; }
.flow { stroke: #c0392b; stroke-width: 0.8; opacity: 0.6; fill: none; }
.occupancy { fill: #4c72b033; stroke: #4c72b0; stroke-width: 1; }
.capacity { stroke: #c0392b; stroke-dasharray: 4 3; stroke-width: 1; }
.panel-bg { fill: #fafafa; stroke: #ddd; }
.tick line { stroke: #bbb; }
.gridline { stroke: #0001; }
#legend { margin-top: 8px; display: flex; flex-wrap: wrap; gap: 12px; }
#legend span.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -2px;
  border: 1px solid #0003; }
#tooltip { position: fixed; pointer-events: none; background: #fffff0; border: 1px solid #999; padding: 6px 8px;
  font: 12px ui-monospace, monospace; white-space: pre; box-shadow: 2px 2px 6px #0003; z-index: 10; }
#hetc-errors { color: #b00; }
#hetc-errors:empty { display: none; }
"""

ERROR_TRAP = """
window.addEventListener('error', function (e) {
  document.getElementById('hetc-errors').textContent += 'error: ' + e.message + '\\n';
});
"""

SCRIPT = r"""
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('hetc-data').textContent);
  var svg = document.getElementById('gantt');
  var view = document.getElementById('view');
  var axis = document.getElementById('axis');
  var chart = document.getElementById('chart');
  var tip = document.getElementById('tooltip');
  var plotW = data.layout.plotWidth, labelW = data.layout.labelWidth, padW = data.layout.padWidth;
  var fitK = plotW / Math.max(data.makespan, 1e-9);
  var k = fitK, tx = 0;            // screen x = labelW + tx + k * t(µs)

  // Use the window's width: the static page is drawn for a default width, the live one fills the box.
  function fitWidth() {
    var wanted = Math.max(400, Math.floor(chart.clientWidth) - labelW - padW - 2);
    if (!(wanted > 0) || wanted === plotW) return;
    var t = (plotW / 2 - tx) / k;      // keep the time at the centre of the view in place
    k *= wanted / plotW; fitK *= wanted / plotW; plotW = wanted; tx = plotW / 2 - k * t;
    var total = labelW + plotW + padW, h = data.layout.height;
    svg.setAttribute('width', total); svg.setAttribute('viewBox', '0 0 ' + total + ' ' + h);
    document.getElementById('plot').setAttribute('width', plotW);
  }
  var NS = 'http://www.w3.org/2000/svg';

  function clamp() {
    k = Math.min(Math.max(k, fitK * 0.5), fitK * 1e5);
    var span = k * data.makespan;
    tx = Math.min(Math.max(tx, Math.min(0, plotW - span) - plotW * 0.25), plotW * 0.25);
  }
  function niceStep(range) {
    var raw = range / 8, p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
    return p * (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10);
  }
  function fmt(t, step) {
    var digits = Math.max(0, Math.min(3, -Math.floor(Math.log10(step))));
    return t.toFixed(digits);
  }
  function drawAxis() {
    while (axis.firstChild) axis.removeChild(axis.firstChild);
    var t0 = -tx / k, t1 = (plotW - tx) / k, step = niceStep(t1 - t0);
    for (var t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      var x = labelW + tx + k * t;
      var g = document.createElementNS(NS, 'g'); g.setAttribute('class', 'tick');
      var line = document.createElementNS(NS, 'line');
      line.setAttribute('x1', x); line.setAttribute('x2', x); line.setAttribute('y1', 18);
      line.setAttribute('y2', data.layout.height); line.setAttribute('class', 'gridline');
      var text = document.createElementNS(NS, 'text');
      text.setAttribute('x', x); text.setAttribute('y', 13); text.setAttribute('text-anchor', 'middle');
      text.textContent = fmt(t, step);
      g.appendChild(line); g.appendChild(text); axis.appendChild(g);
    }
    var unit = document.createElementNS(NS, 'text');
    unit.setAttribute('x', 4); unit.setAttribute('y', 13); unit.textContent = 'time (\u00b5s)';
    axis.appendChild(unit);
  }
  function apply() {
    clamp();
    view.setAttribute('transform', 'translate(' + tx + ',0) scale(' + k + ',1)');
    drawAxis();
  }
  function zoomAt(factor, screenX) {
    var px = screenX - labelW, t = (px - tx) / k;
    k *= factor; clamp(); tx = px - k * t; apply();
  }
  function svgX(ev) { return ev.clientX - svg.getBoundingClientRect().left; }

  chart.addEventListener('wheel', function (ev) {
    ev.preventDefault();
    zoomAt(ev.deltaY < 0 ? 1.25 : 0.8, svgX(ev));
  }, {passive: false});
  var drag = null;
  chart.addEventListener('mousedown', function (ev) {
    drag = {x: ev.clientX, tx: tx}; chart.classList.add('dragging');
  });
  window.addEventListener('mousemove', function (ev) {
    if (drag) { tx = drag.tx + ev.clientX - drag.x; apply(); }
  });
  window.addEventListener('mouseup', function () { drag = null; chart.classList.remove('dragging'); });
  document.getElementById('zoom-in').addEventListener('click', function () { zoomAt(1.5, labelW + plotW / 2); });
  document.getElementById('zoom-out').addEventListener('click', function () { zoomAt(1 / 1.5, labelW + plotW / 2); });
  document.getElementById('zoom-reset').addEventListener('click', function () { k = fitK; tx = 0; apply(); });
  document.getElementById('show-flows').addEventListener('change', function (ev) {
    document.getElementById('flows').style.display = ev.target.checked ? '' : 'none';
  });

  function show(v) {               // shapes as 1x8x16x16, lists of them comma-separated
    if (Array.isArray(v)) {
      return v.every(function (x) { return typeof x === 'number'; }) ? v.join('x') || 'scalar' : v.map(show).join(', ');
    }
    return typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(3) : String(v);
  }
  function describe(s) {
    var lines = [s.name, s.engine + '  [' + s.cls + ']',
                 'start ' + s.start.toFixed(3) + ' \u00b5s   end ' + s.end.toFixed(3) + ' \u00b5s   (' +
                 (s.end - s.start).toFixed(3) + ' \u00b5s)'];
    Object.keys(s.args).forEach(function (key) {
      var v = s.args[key];
      if (v === null || v === undefined) return;
      lines.push(key + ': ' + show(v));
    });
    return lines.join('\n');
  }
  function showTip(el, clientX, clientY) {
    tip.textContent = describe(data.slices[+el.getAttribute('data-i')]);
    tip.hidden = false;
    tip.style.left = Math.min(clientX + 14, window.innerWidth - tip.offsetWidth - 4) + 'px';
    var below = clientY + 14, above = clientY - 14 - tip.offsetHeight;
    tip.style.top = (below + tip.offsetHeight > window.innerHeight && above > 0 ? above : below) + 'px';
  }
  svg.addEventListener('mousemove', function (ev) {
    var el = ev.target.closest ? ev.target.closest('.slice') : null;
    if (el && !drag) showTip(el, ev.clientX, ev.clientY); else tip.hidden = true;
  });
  svg.addEventListener('mouseleave', function () { tip.hidden = true; });

  window.addEventListener('resize', function () { fitWidth(); apply(); });
  fitWidth();
  apply();
  document.body.setAttribute('data-lanes', document.querySelectorAll('g.lane').length);
  document.body.setAttribute('data-ready', '1');

  if (location.hash === '#selftest') {
    // Drive the real handlers with synthetic events, then report what changed.
    var mid = svg.getBoundingClientRect().left + labelW + plotW / 2;
    var k0 = k;
    document.getElementById('zoom-in').click();
    var button = k > k0;
    var k1 = k;
    chart.dispatchEvent(new WheelEvent('wheel', {deltaY: -100, clientX: mid, bubbles: true, cancelable: true}));
    var wheel = k > k1;
    var tx0 = tx;
    chart.dispatchEvent(new MouseEvent('mousedown', {clientX: mid, bubbles: true}));
    window.dispatchEvent(new MouseEvent('mousemove', {clientX: mid - 40, bubbles: true}));
    window.dispatchEvent(new MouseEvent('mouseup', {bubbles: true}));
    var pan = tx < tx0;
    var first = document.querySelector('.slice');
    if (first) showTip(first, 10, 10);
    var tipOk = !first || tip.textContent.indexOf(data.slices[+first.getAttribute('data-i')].name) === 0;
    tip.hidden = true;
    document.getElementById('zoom-reset').click();
    var reset = Math.abs(k - fitK) < 1e-9 && tx === 0;
    var ticks = axis.querySelectorAll('g.tick').length;
    var ok = button && wheel && pan && tipOk && reset && ticks > 1;
    document.body.setAttribute('data-selftest', ok ? 'ok' : 'failed button=' + button + ' wheel=' + wheel +
      ' pan=' + pan + ' tip=' + tipOk + ' reset=' + reset + ' ticks=' + ticks);
  }
})();
"""
