(function () {
  'use strict';
  try {
    main();
  } catch (e) {
    document.body.dataset.error = String(e && e.stack || e);
    const p = document.createElement('p');
    p.className = 'empty';
    p.textContent = 'The charts could not be drawn: ' + e;
    document.querySelector('main').prepend(p);
  }

  function main() {
    const D = JSON.parse(document.getElementById('sw-data').textContent);
    const NS = document.getElementById('chart-svg').namespaceURI;
    const tip = document.getElementById('tip');
    const PROC_COLORS = ['#3b4351', '#8c939d', '#9c755f', '#5a6f8c'];
    const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let paths = 0;

    function svg(name, attrs, parent) {
      const e = document.createElementNS(NS, name);
      for (const k in attrs) e.setAttribute(k, attrs[k]);
      if (parent) parent.appendChild(e);
      return e;
    }
    function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }
    /* 190.8 KiB, 4 KiB: binary units, one decimal below 100 unless it is 0. */
    function bytes(b) {
      let u = 0;
      while (Math.abs(b) >= 1024 && u < UNITS.length - 1) { b /= 1024; u++; }
      let s = u && Math.abs(b) < 100 ? b.toFixed(1) : String(Math.round(b));
      if (s.slice(-2) === '.0') s = s.slice(0, -2);
      return s + ' ' + UNITS[u];
    }
    function exact(b) { return Math.round(b).toLocaleString('en-US') + ' bytes'; }
    function pad(n) { return (n < 10 ? '0' : '') + n; }
    function hms(t) {
      const d = new Date(t);
      return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
    }
    function showTip(ev, rows) {
      clear(tip);
      rows.forEach(function (r, i) {
        const d = document.createElement('div');
        if (i === 0) d.className = 't';
        if (r.color) {
          const sw = document.createElement('i');
          sw.style.background = r.color;
          d.appendChild(sw);
        }
        d.appendChild(document.createTextNode(r.text !== undefined ? r.text : r));
        tip.appendChild(d);
      });
      tip.hidden = false;
      const w = tip.offsetWidth, h = tip.offsetHeight;
      let x = ev.clientX + 14, y = ev.clientY + 14;
      if (x + w > window.innerWidth - 4) x = Math.max(4, ev.clientX - w - 14);
      if (y + h > window.innerHeight - 4) y = Math.max(4, ev.clientY - h - 14);
      tip.style.left = x + 'px';
      tip.style.top = y + 'px';
    }
    function hideTip() { tip.hidden = true; }

    /* ------------------------------------------------------------ table */
    const bodies = Array.prototype.slice.call(
      document.querySelectorAll('#stacks tbody.stack'));
    function toggle(tb, open) {
      const on = open === undefined ? !tb.classList.contains('open') : open;
      tb.classList.toggle('open', on);
      tb.querySelector('tr.row').setAttribute('aria-expanded', on ? 'true' : 'false');
    }
    function openStack(i) {
      const tb = bodies[i];
      if (!tb) return;
      toggle(tb, true);
      tb.scrollIntoView({ block: 'nearest' });
    }
    let highlighted = -1;
    bodies.forEach(function (tb) {
      const tr = tb.querySelector('tr.row');
      const i = +tb.dataset.i;
      tr.addEventListener('click', function () { toggle(tb); });
      tr.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); toggle(tb); }
      });
      tr.addEventListener('mouseenter', function () { highlight(i); });
      tr.addEventListener('mouseleave', function () { highlight(-1); });
    });
    /* #s<stack id> in the address opens that stack's row. */
    const want = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (want && want.classList.contains('stack')) {
      toggle(want, true);
      want.scrollIntoView();
    }
    const ea = document.getElementById('expand-all');
    const ca = document.getElementById('collapse-all');
    function toggleAll(on) { bodies.forEach(function (b) { toggle(b, on); }); }
    if (ea) ea.addEventListener('click', function () { toggleAll(true); });
    if (ca) ca.addEventListener('click', function () { toggleAll(false); });

    /* ------------------------------------------------------------ chart */
    const lines = [];
    D.stacks.slice(0, D.palette.length).forEach(function (s, i) {
      if (!s.series.length) return;
      lines.push({ stack: i, color: D.palette[i], dash: null,
        name: '#' + (i + 1) + ' ' + s.label,
        sub: s.id + ' pid ' + s.pid,
        pts: s.series.map(function (p) { return [p[0], p[1]]; }), off: false });
    });
    D.procs.forEach(function (c, i) {
      if (!c.series.length) return;
      lines.push({ stack: -1, color: PROC_COLORS[i % PROC_COLORS.length], dash: '6 4',
        name: 'pid ' + c.pid + ' ' + c.exe + ' (process total)', sub: '',
        pts: c.series.map(function (p) { return [p[0], p[1]]; }), off: false });
      /* The memory account beside it: what the kernel and malloc hold, so a
       * gap between RSS and the tracked live heap is seen, not hidden. */
      [[3, 'RSS', '2 3'], [4, 'malloc heap (live + free held)', '10 3 2 3']].forEach(function (a) {
        const pts = c.series.filter(function (p) { return p[a[0]] > 0; })
          .map(function (p) { return [p[0], p[a[0]]]; });
        if (!pts.length) return;
        lines.push({ stack: -1, color: PROC_COLORS[i % PROC_COLORS.length], dash: a[2],
          name: 'pid ' + c.pid + ' ' + c.exe + ' ' + a[1], sub: '', pts: pts, off: false });
      });
    });
    let logScale = false;
    const chartBox = document.getElementById('chart');
    const chartSvg = document.getElementById('chart-svg');
    const legend = document.getElementById('legend');

    function niceStep(span, n) {
      const raw = span / n, p = Math.pow(10, Math.floor(Math.log10(raw)));
      const m = raw / p;
      return p * (m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10);
    }
    function linTicks(max) {
      if (max <= 0) max = 1024;
      let u = 1;
      while (max / u >= 1024 && u < Math.pow(1024, 4)) u *= 1024;
      const step = niceStep(max / u, 5) * u;
      const ticks = [];
      for (let v = 0; v < max + step * 0.999; v += step) ticks.push(v);
      return ticks;
    }
    function logTicks(lo, hi) {
      let a = Math.floor(Math.log2(Math.max(lo, 1)) / 2) * 2;
      let b = Math.ceil(Math.log2(Math.max(hi, 2)) / 2) * 2;
      if (b <= a) b = a + 2;
      const every = Math.max(2, Math.ceil((b - a) / 7 / 2) * 2);
      const ticks = [];
      for (let k = a; k <= b; k += every) ticks.push(Math.pow(2, k));
      const last = Math.log2(ticks[ticks.length - 1]);
      if (last < b) ticks.push(Math.pow(2, last + every));
      return ticks;
    }
    const TSTEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
      21600, 43200, 86400];
    function timeTicks(t0, t1, n) {
      const span = (t1 - t0) / 1000;
      let step = TSTEPS[TSTEPS.length - 1];
      for (let i = 0; i < TSTEPS.length; i++)
        if (span / TSTEPS[i] <= n) { step = TSTEPS[i]; break; }
      step *= 1000;
      const ticks = [];
      for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) ticks.push(t);
      return ticks;
    }
    function nearest(pts, t) {
      let lo = 0, hi = pts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (pts[mid][0] < t) lo = mid + 1; else hi = mid;
      }
      if (lo > 0 && Math.abs(pts[lo - 1][0] - t) <= Math.abs(pts[lo][0] - t)) lo--;
      return pts[lo];
    }

    function drawLegend() {
      clear(legend);
      lines.forEach(function (l) {
        const s = document.createElement('span');
        if (l.off) s.className = 'off';
        const i = document.createElement('i');
        i.style.borderTopColor = l.color;
        if (l.dash) i.className = 'dash';
        s.appendChild(i);
        s.appendChild(document.createTextNode(l.name));
        s.title = (l.sub ? l.sub + ': ' : '') + 'click to hide or show';
        s.addEventListener('click', function () {
          l.off = !l.off;
          drawChart();
          drawLegend();
        });
        s.addEventListener('mouseenter', function () {
          highlight(l.stack >= 0 ? l.stack : -2 - lines.indexOf(l));
        });
        s.addEventListener('mouseleave', function () { highlight(-1); });
        legend.appendChild(s);
      });
    }

    function drawChart() {
      clear(chartSvg);
      const vis = lines.filter(function (l) { return !l.off; });
      if (!lines.length) { chartSvg.style.display = 'none'; return; }
      const W = Math.max(320, chartBox.clientWidth - 16), H = 300;
      const m = { l: 66, r: 18, t: 10, b: 26 };
      chartSvg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
      chartSvg.setAttribute('height', H);
      let t0 = Infinity, t1 = -Infinity, vmax = 0, vmin = Infinity;
      vis.forEach(function (l) {
        l.pts.forEach(function (p) {
          t0 = Math.min(t0, p[0]); t1 = Math.max(t1, p[0]);
          vmax = Math.max(vmax, p[1]);
          if (p[1] > 0) vmin = Math.min(vmin, p[1]);
        });
      });
      if (!vis.length) { t0 = D.now_ms - 60000; t1 = D.now_ms; }
      /* Up to the report's time, unless the samples ended long before it. */
      if (D.now_ms > t1 && D.now_ms - t1 < (t1 - t0) / 4) t1 = D.now_ms;
      if (t1 - t0 < 2000) t1 = t0 + 2000;
      let yt, y;
      const ph = H - m.t - m.b, pw = W - m.l - m.r;
      if (logScale) {
        yt = logTicks(vmin === Infinity ? 1 : vmin, vmax);
        const a = Math.log2(yt[0]), b = Math.log2(yt[yt.length - 1]);
        y = function (v) {
          return m.t + ph - (Math.log2(Math.max(v, yt[0])) - a) / (b - a) * ph;
        };
      } else {
        yt = linTicks(vmax);
        const top = yt[yt.length - 1];
        y = function (v) { return m.t + ph - v / top * ph; };
      }
      const x = function (t) { return m.l + (t - t0) / (t1 - t0) * pw; };
      yt.forEach(function (v) {
        const yy = Math.round(y(v)) + 0.5;
        svg('line', { x1: m.l, x2: W - m.r, y1: yy, y2: yy, class: 'grid' }, chartSvg);
        const label = svg('text', { x: m.l - 6, y: yy + 4, 'text-anchor': 'end' },
          chartSvg);
        label.textContent = bytes(v);
      });
      timeTicks(t0, t1, Math.max(2, Math.floor(pw / 90))).forEach(function (t) {
        const xx = Math.round(x(t)) + 0.5;
        svg('line', { x1: xx, x2: xx, y1: m.t + ph, y2: m.t + ph + 4, class: 'axis' },
          chartSvg);
        const label = svg('text', { x: xx, y: H - 8, 'text-anchor': 'middle' }, chartSvg);
        label.textContent = hms(t);
      });
      const base = m.t + ph + 0.5;
      svg('line', { x1: m.l, x2: W - m.r, y1: base, y2: base, class: 'axis' }, chartSvg);
      svg('line', { x1: m.l - 0.5, x2: m.l - 0.5, y1: m.t, y2: base, class: 'axis' },
        chartSvg);
      const g = svg('g', {}, chartSvg);
      vis.slice().reverse().forEach(function (l) {
        const d = l.pts.map(function (p, i) {
          return (i ? 'L' : 'M') + x(p[0]).toFixed(1) + ' ' + y(p[1]).toFixed(1);
        }).join('');
        const attrs = { d: d, fill: 'none', stroke: l.color, 'stroke-width': 2,
          'stroke-linejoin': 'round', 'stroke-linecap': 'round', class: 'ln' };
        if (l.dash) attrs['stroke-dasharray'] = l.dash;
        l.el = svg('g', {}, g);
        l.path = svg('path', attrs, l.el);
        paths++;
        if (l.pts.length <= 12)
          l.pts.forEach(function (p) {
            svg('circle', { cx: x(p[0]), cy: y(p[1]), r: 2.5, fill: l.color }, l.el);
          });
        if (l.stack >= 0) {
          const hit = svg('path', { d: d, fill: 'none', stroke: 'transparent',
            'stroke-width': 10,
            style: 'cursor:pointer' }, g);
          hit.addEventListener('click', function () { openStack(l.stack); });
        }
      });
      const cross = svg('line', { y1: m.t, y2: m.t + ph, stroke: '#9aa3ad',
        'stroke-dasharray': '3 3',
        visibility: 'hidden', 'pointer-events': 'none' }, chartSvg);
      const dots = svg('g', { 'pointer-events': 'none' }, chartSvg);
      chartSvg.onmousemove = function (ev) {
        if (!vis.length) return;
        const r = chartSvg.getBoundingClientRect();
        const px = (ev.clientX - r.left) * W / r.width;
        if (px < m.l || px > W - m.r) { chartSvg.onmouseleave(); return; }
        const t = t0 + (px - m.l) / pw * (t1 - t0);
        let best = null;
        vis.forEach(function (l) {
          const p = nearest(l.pts, t);
          if (!best || Math.abs(p[0] - t) < Math.abs(best - t)) best = p[0];
        });
        cross.setAttribute('x1', x(best));
        cross.setAttribute('x2', x(best));
        cross.setAttribute('visibility', 'visible');
        clear(dots);
        const rows = [];
        vis.forEach(function (l) {
          /* Within the line's samples, give or take one sampling step. */
          const n = l.pts.length, first = l.pts[0][0], last = l.pts[n - 1][0];
          const step = n > 1 ? (last - first) / (n - 1) : (t1 - t0) / 50;
          if (best < first - step || best > last + step) return;
          const p = nearest(l.pts, best);
          svg('circle', { cx: x(p[0]), cy: y(p[1]), r: 3.5, fill: '#fff', stroke: l.color,
            'stroke-width': 2 }, dots);
          rows.push({ v: p[1], color: l.color, text: bytes(p[1]) + '  ' + l.name });
        });
        rows.sort(function (a, b) { return b.v - a.v; });
        showTip(ev, [hms(best) + '  live bytes'].concat(rows));
      };
      chartSvg.onmouseleave = function () {
        cross.setAttribute('visibility', 'hidden');
        clear(dots);
        hideTip();
      };
      applyHighlight();
    }

    function applyHighlight() {
      lines.forEach(function (l, k) {
        if (!l.el) return;
        const me = highlighted === l.stack && l.stack >= 0 || highlighted === -2 - k;
        const dim = highlighted !== -1 && !me;
        l.path.setAttribute('stroke-width', me ? 3.5 : 2);
        l.el.style.opacity = dim ? 0.18 : 1;
      });
    }
    function highlight(i) {
      highlighted = i;
      bodies.forEach(function (tb) { tb.classList.toggle('hl', +tb.dataset.i === i); });
      applyHighlight();
    }

    document.querySelectorAll('#s-chart button[data-scale]').forEach(function (b) {
      b.addEventListener('click', function () {
        logScale = b.dataset.scale === 'log';
        document.querySelectorAll('#s-chart button[data-scale]').forEach(function (o) {
          o.classList.toggle('on', o === b);
        });
        drawChart();
      });
    });

    /* ------------------------------------------------------------ flame graph */
    const flameBox = document.getElementById('flame');
    const flameSvg = document.getElementById('flame-svg');
    const flameNote = document.getElementById('flame-note');
    let totalMl = 0;
    D.stacks.forEach(function (s) { totalMl += s.ml; });
    const weightKey = totalMl > 0 ? 'ml' : 'live';
    function newNode(name, parent) {
      return { n: name, v: 0, kids: [], byName: {}, parent: parent, m: '', s: '',
        stacks: 0,
        depth: parent ? parent.depth + 1 : 0 };
    }
    function child(node, name) {
      let c = node.byName[name];
      if (!c) { c = newNode(name, node); node.byName[name] = c; node.kids.push(c); }
      return c;
    }
    /* Top-down: outermost caller first (the flame graph); bottom-up:
     * the allocation site first, its callers below (heaptrack's toggle). */
    function buildTree(bottomUp) {
      const r = newNode('all stacks', null);
      let depthMax = 0;
      D.stacks.forEach(function (s) {
        const w = s[weightKey];
        if (!(w > 0)) return;
        let node = r;
        node.v += w;
        node = child(node, D.by_exe ? s.exe : s.exe + ' [' + s.pid + ']');
        node.v += w;
        node.stacks++;
        const nf = s.frames.length;
        for (let i = 0; i < nf; i++) {
          const f = s.frames[bottomUp ? i : nf - 1 - i];
          node = child(node, f.n);
          node.v += w;
          node.stacks++;
          if (!node.m) node.m = f.m;
          if (node.s === '') node.s = f.s; else if (node.s !== f.s) node.s = null;
        }
        depthMax = Math.max(depthMax, node.depth);
      });
      r.n = 'all stacks: ' + bytes(r.v) + (weightKey === 'ml' ? ' may-leak' : ' live');
      (function sortKids(n) {
        n.kids.sort(function (a, b) { return b.v - a.v || (a.n < b.n ? -1 : 1); });
        n.kids.forEach(sortKids);
      })(r);
      return { root: r, maxDepth: depthMax };
    }
    const trees = { td: buildTree(false), bu: buildTree(true) };
    let root = trees.td.root, maxDepth = trees.td.maxDepth;
    if (totalMl === 0 && root.v > 0 && flameNote)
      flameNote.textContent = 'no block has expired yet: widths show live bytes instead';
    let focus = root;
    const ROW = 19;
    const measure = document.createElement('canvas').getContext('2d');
    function hash(s) {
      let h = 2166136261;
      for (let i = 0; i < s.length; i++) {
        h ^= s.charCodeAt(i);
        h = Math.imul(h, 16777619);
      }
      return h >>> 0;
    }
    function flameColor(n) {
      if (n.depth === 0) return '#c9cfd7';
      if (n.depth === 1) return '#b4bfcc';
      if (n.m === '[python]') return 'hsl(' + (205 + hash(n.n) % 20) + ',62%,66%)';
      const h = hash(n.n);
      if (!n.kids.length) return 'hsl(' + (h % 12) + ',78%,' + (58 + (h >> 8) % 8) + '%)';
      return 'hsl(' + (12 + h % 38) + ',' + (78 + (h >> 6) % 14) + '%,' +
        (60 + (h >> 12) % 10) + '%)';
    }
    function fit(text, w, cw) {
      const max = Math.floor((w - 8) / cw);
      if (max < 4 && text.length > max) return '';
      return text.length <= max ? text : text.slice(0, max - 1) + '\u2026';
    }
    function drawFlame() {
      clear(flameSvg);
      if (!root.v) { flameSvg.style.display = 'none'; return; }
      const W = Math.max(320, flameBox.clientWidth - 16);
      const H = (maxDepth + 1) * ROW + 2;
      flameSvg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
      flameSvg.setAttribute('height', H);
      const g = svg('g', { class: 'fl' }, flameSvg);
      measure.font = '11px ui-monospace,SFMono-Regular,Menlo,Consolas,' +
        'DejaVu Sans Mono,monospace';
      const cw = measure.measureText('MMMMMMMMMM').width / 10 || 6.6;
      const ancestors = new Set();
      for (let a = focus; a; a = a.parent) ancestors.add(a);
      function place(n, x0, scale) {
        const w = n.v * scale;
        if (w < 0.6) return;
        const y = n.depth * ROW;
        const at = 'translate(' + x0.toFixed(2) + ',' + y + ')';
        const cell = svg('g', { transform: at }, g);
        const r = svg('rect', { width: Math.max(w - 0.5, 0.5).toFixed(2), height: ROW - 1,
          fill: flameColor(n), rx: 1.5 }, cell);
        if (ancestors.has(n) && n !== focus) r.setAttribute('class', 'dim');
        paths++;
        const label = fit(n.n, w, cw);
        if (label) svg('text', { x: 4, y: ROW - 6 }, cell).textContent = label;
        r.addEventListener('mousemove', function (ev) {
          const rows = [n.n, bytes(n.v) + '  (' + exact(n.v) + ', ' +
            (100 * n.v / root.v).toFixed(1) + '% of ' +
            (weightKey === 'ml' ? 'may-leak' : 'live') + ')'];
          if (n.s) rows.push(n.s);
          if (n.m) rows.push(n.m);
          if (n.depth > 0) rows.push(n.stacks + ' stack' + (n.stacks === 1 ? '' : 's') +
            ' through here; click to zoom');
          showTip(ev, rows);
        });
        r.addEventListener('mouseleave', hideTip);
        r.addEventListener('click', function () {
          focus = n === focus ? (n.parent || root) : n;
          drawFlame();
        });
        let cx = x0;
        n.kids.forEach(function (k) { place(k, cx, scale); cx += k.v * scale; });
      }
      /* Ancestors of the focus span the full width; the focus fills it. */
      const scale = W / focus.v;
      for (let a = focus.parent; a; a = a.parent) {
        const y = a.depth * ROW;
        const cell = svg('g', { transform: 'translate(0,' + y + ')' }, g);
        const r = svg('rect', { width: W, height: ROW - 1, fill: flameColor(a), rx: 1.5,
          class: 'dim' }, cell);
        const label = fit(a.n, W, cw);
        if (label) svg('text', { x: 4, y: ROW - 6 }, cell).textContent = label;
        const an = a;
        r.addEventListener('click', function () { focus = an; drawFlame(); });
        r.addEventListener('mousemove', function (ev) {
          showTip(ev, [an.n, bytes(an.v) + '; click to zoom out']);
        });
        r.addEventListener('mouseleave', hideTip);
      }
      place(focus, 0, scale);
      const reset = document.getElementById('flame-reset');
      if (reset) reset.disabled = focus === root;
    }
    const fr = document.getElementById('flame-reset');
    if (fr) fr.addEventListener('click', function () { focus = root; drawFlame(); });
    const orderNotes = { td: 'top-down: outermost caller on top, allocation site at the ' +
      'bottom; width \u221d bytes; click to zoom', bu: 'bottom-up: allocation site on ' +
      'top, its callers below; width \u221d bytes; click to zoom' };
    function setOrder(o) {
      root = trees[o].root;
      maxDepth = trees[o].maxDepth;
      focus = root;
      document.querySelectorAll('#s-flame button[data-order]').forEach(function (b) {
        b.classList.toggle('on', b.dataset.order === o);
      });
      if (flameNote && totalMl > 0) flameNote.textContent = orderNotes[o];
      document.body.dataset.flameOrder = o;
    }
    document.querySelectorAll('#s-flame button[data-order]').forEach(function (b) {
      b.addEventListener('click', function () { setOrder(b.dataset.order); drawFlame(); });
    });
    setOrder(location.hash === '#bottom-up' ? 'bu' : 'td');

    function drawAll() {
      paths = 0;
      drawChart();
      drawFlame();
      document.body.dataset.paths = String(paths);
    }
    drawLegend();
    drawAll();
    let pending = 0;
    window.addEventListener('resize', function () {
      clearTimeout(pending);
      pending = setTimeout(drawAll, 120);
    });
    document.body.dataset.rendered = '1';
  }
})();
