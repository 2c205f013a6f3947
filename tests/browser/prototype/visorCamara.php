<!DOCTYPE html>
<html>
<head>
<meta charset='UTF-8' />
<title>Visor</title>
<!--
  The daycare prototype's viewer page: every message from serverCam.php is a
  picture's data URL, set as the <img> source. A test fixture
  (tests/browser/run.mjs); the WebSocket host comes from `?ws=HOST:PORT`, the one
  line a daycare would edit.
-->
</head>
<body>
<img id="visor" width="320" height="240" alt="">
<script type="text/javascript">
var wsUri = "ws://" + (new URLSearchParams(location.search).get('ws') || "localhost:9000") + "/chat/serverCam.php";
var websocket = new WebSocket(wsUri);
websocket.onmessage = function(ev) {
	document.getElementById('visor').src = ev.data;
};
</script>
</body>
</html>
