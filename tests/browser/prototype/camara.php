<!DOCTYPE html>
<html>
<head>
<meta charset='UTF-8' />
<title>Camara</title>
<!--
  The daycare prototype's camera page: the browser's camera in a <video>, drawn
  on a canvas every 500 ms and sent as canvas.toDataURL() (no type: PNG) to
  serverCam.php. A test fixture (tests/browser/run.mjs); the WebSocket host comes
  from `?ws=HOST:PORT`, the one line a daycare would edit.
-->
</head>
<body>
<video id="video" width="320" height="240" autoplay playsinline muted></video>
<canvas id="canvas" width="320" height="240" style="display:none"></canvas>
<script type="text/javascript">
var wsUri = "ws://" + (new URLSearchParams(location.search).get('ws') || "localhost:9000") + "/chat/serverCam.php";
var websocket = new WebSocket(wsUri);
var video = document.getElementById('video');
var canvas = document.getElementById('canvas');
var context = canvas.getContext('2d');

navigator.mediaDevices.getUserMedia({ video: true, audio: false }).then(function(stream) {
	video.srcObject = stream;
	video.play();
});

setInterval(function() {
	context.drawImage(video, 0, 0, canvas.width, canvas.height);
	if (websocket.readyState == 1) {
		websocket.send(canvas.toDataURL());
	}
}, 500);
</script>
</body>
</html>
