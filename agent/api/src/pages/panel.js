// nuvol panel: optional live updates. Everything works without this file.
(function(){
  var live = document.getElementById('live');
  if (live) { setTimeout(function(){ location.reload(); }, 30000); }
  // Community page: follow the event stream; on a membership change fetch
  // the page again and swap its sections (a reload after 30 s if it breaks).
  var ev = document.getElementById('events');
  if (ev && window.fetch && window.TextDecoder) {
    var since = ev.getAttribute('data-last') || '0', timer = null;
    var refresh = function(){
      timer = null;
      fetch('/community', {credentials:'same-origin'}).then(function(r){ return r.text(); }).then(function(t){
        var doc = new DOMParser().parseFromString(t, 'text/html');
        ['members', 'community-services', 'events'].forEach(function(id){
          var a = document.getElementById(id), b = doc.getElementById(id);
          if (a && b) a.innerHTML = b.innerHTML;
        });
        document.body.setAttribute('data-refreshed', String(Date.now()));
      }).catch(function(){});
    };
    var fallback = function(){ setTimeout(function(){ location.reload(); }, 30000); };
    fetch('/api/v1/events?since=' + encodeURIComponent(since), {credentials:'same-origin'}).then(function(r){
      if (!r.ok || !r.body) return fallback();
      var rd = r.body.getReader(), dec = new TextDecoder(), buf = '';
      function more(){ return rd.read().then(function(x){
        if (x.done) return fallback();
        buf += dec.decode(x.value, {stream:true});
        var frames = buf.split('\n\n'); buf = frames.pop();
        frames.forEach(function(f){
          var m = /^event: (join|leave|failed|update|reap)$/m.exec(f);
          if (m && !timer) timer = setTimeout(refresh, 300);
        });
        return more(); }); }
      return more();
    }).catch(fallback);
  }
  document.querySelectorAll('pre[data-follow]').forEach(function(pre){
    fetch(pre.getAttribute('data-follow'), {credentials:'same-origin'}).then(function(r){
      if (!r.body) return;
      var rd = r.body.getReader(), dec = new TextDecoder();
      function more(){ return rd.read().then(function(x){
        if (x.done) return;
        pre.textContent += dec.decode(x.value, {stream:true});
        if (pre.textContent.length > 200000) pre.textContent = pre.textContent.slice(-100000);
        pre.scrollTop = pre.scrollHeight; return more(); }); }
      return more();
    }).catch(function(){});
  });
})();
