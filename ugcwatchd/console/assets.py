"""The console's only style sheet and script, sent inline with a per-response nonce: nothing is loaded
from elsewhere, so the pages work offline and under a Content-Security-Policy that allows nothing else."""

CSS = """
:root{color-scheme:light dark;--fg:#1d1f21;--bg:#fff;--muted:#667;--line:#dde;--accent:#2b6cb0;
--bad:#c53030;--warn:#a0640c;--ok:#2f855a;--tint:rgba(127,127,127,.08)}
@media (prefers-color-scheme:dark){:root{--fg:#e6e6e6;--bg:#16181a;--muted:#9aa3ad;--line:#30343a;
--accent:#63a4ff;--bad:#fc8181;--warn:#f6c05e;--ok:#68d391}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
a{color:var(--accent)}
header{border-bottom:1px solid var(--line);padding:.5rem 1rem;display:flex;gap:.4rem 1.2rem;
flex-wrap:wrap;align-items:center}
header .brand{font-weight:600}header nav{display:flex;gap:1rem;flex:1}
main{padding:.5rem 1rem 1rem;max-width:1150px;margin:0 auto;overflow-wrap:break-word}
h1{font-size:1.3rem;margin:.6rem 0}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;font-size:.9rem}
td.nm{overflow-wrap:anywhere;min-width:9rem}
.scroll{overflow-x:auto}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(16rem,1fr));gap:.8rem}
.card{border:1px solid var(--line);border-radius:6px;padding:.6rem .8rem}
.card h3{margin:0 0 .3rem;font-size:1rem}
.counts{display:flex;flex-wrap:wrap;gap:.3rem 1.2rem;margin:.3rem 0}
.counts b{font-size:1.15rem}
.muted{color:var(--muted)}.bad{color:var(--bad)}.warn{color:var(--warn)}.ok{color:var(--ok)}
.flash{border:1px solid var(--accent);padding:.5rem .7rem;border-radius:4px;margin:.5rem 0}
.note{background:var(--tint);padding:.5rem .7rem;border-radius:4px;margin:.5rem 0}
form.inline{display:inline}
button{font:inherit;padding:.2rem .7rem;border-radius:4px;border:1px solid var(--line);background:var(--bg);
color:var(--fg);cursor:pointer}
button.go{background:var(--accent);color:#fff;border-color:var(--accent)}
button.stop{border-color:var(--bad);color:var(--bad)}
progress{width:6.5rem;vertical-align:middle}
.chart{width:100%;height:auto;max-height:230px;color:var(--muted)}
.legend{list-style:none;padding:0;margin:.2rem 0 1rem;display:flex;flex-wrap:wrap;gap:.2rem 1rem;font-size:.9rem}
pre{white-space:pre-wrap;word-break:break-all;font-size:.82rem;background:var(--tint);padding:.5rem;
border-radius:4px;max-height:22rem;overflow:auto;margin:.2rem 0 .8rem}
code{font-size:.9em}
footer{padding:1rem;color:var(--muted);font-size:.85rem;text-align:center}
body.stale #stamp::after{content:" - connection lost, retrying";color:var(--bad)}
input,select{font:inherit;padding:.25rem .35rem;max-width:100%;background:var(--bg);color:var(--fg);
border:1px solid var(--line);border-radius:4px}
form.search{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-end}
form.search label{display:flex;flex-direction:column;font-size:.85rem}
.pager{margin:.8rem 0}
@media (max-width:640px){th,td{padding:.25rem .3rem}.wide{display:none}main{padding:.4rem .5rem}}
"""

# Every element with data-live is fetched again every data-every milliseconds and replaced in place;
# a page in the background is not refreshed, and a lost connection is shown, then retried.
SCRIPT = """
(function () {
  "use strict";
  var stamp = document.getElementById("stamp");
  document.querySelectorAll("[data-live]").forEach(function (el) {
    var every = parseInt(el.getAttribute("data-every"), 10) || 2000;
    function tick() {
      if (document.hidden) { setTimeout(tick, every); return; }
      fetch(el.getAttribute("data-live"), {credentials: "same-origin", cache: "no-store"})
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
        .then(function (html) {
          var active = document.activeElement;
          if (!active || active === document.body || !el.contains(active)) { el.innerHTML = html; }
          document.body.classList.remove("stale");
          if (stamp) { stamp.textContent = new Date().toLocaleTimeString(); }
        })
        .catch(function () { document.body.classList.add("stale"); })
        .then(function () { setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  });
})();
"""
